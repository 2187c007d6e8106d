"""Document ingestion: parsing uploaded files and cutting them into chunks."""
