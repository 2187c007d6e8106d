"""Core library of the RAG service: settings, registry, embeddings, vector store,
prompt assembly and generation. Knows nothing of HTTP."""
