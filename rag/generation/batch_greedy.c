/* The batch-greedy backend sampler of rag/generation/sampler.py, in C, and a
 * quiet log callback for llama.cpp.
 *
 * llama.cpp applies every attached sampler chain each time it builds a decode
 * graph (64 chains with 64 slots; 17 graphs in a 16-stream burst's prompt
 * phase). Written in Python, each application is a call into Python that must
 * take the GIL while llama_decode, which let go of it, runs on the scheduler
 * thread; every other thread of the model process then stands between the
 * graph and the GPU. Here nothing in llama_decode needs the GIL.
 *
 * No header of llama.cpp or ggml is included and nothing is linked: the ggml
 * functions come as pointers from Python (the very ggml llama_cpp loaded), and
 * the structs below copy llama-cpp-python 0.3.36's; rag_bg_layout lets Python
 * check them against its own view of ggml and llama.cpp before any is used.
 * Built by rag/generation/cbuild.py. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct ggml_tensor {
    int type;
    void *buffer;
    int64_t ne[4];
    size_t nb[4];
    int op;
    int32_t op_params[16];
    int32_t flags;
    struct ggml_tensor *src[10];
    struct ggml_tensor *view_src;
    size_t view_offs;
    void *data;
    char name[64];
    void *extra;
    char padding[8];
};

struct llama_sampler;

typedef struct {
    int32_t id;
    float logit;
    float p;
} llama_token_data;

typedef struct {
    llama_token_data *data;
    size_t size;
    int64_t selected;
    bool sorted;
} llama_token_data_array;

struct llama_sampler_data {
    struct ggml_tensor *logits;
    struct ggml_tensor *probs;
    struct ggml_tensor *sampled;
    struct ggml_tensor *candidates;
};

struct llama_sampler_i {
    const char *(*name)(const struct llama_sampler *);
    void (*accept)(struct llama_sampler *, int32_t);
    void (*apply)(struct llama_sampler *, llama_token_data_array *);
    void (*reset)(struct llama_sampler *);
    struct llama_sampler *(*clone)(const struct llama_sampler *);
    void (*free)(struct llama_sampler *);
    bool (*backend_init)(struct llama_sampler *, void *, uint32_t);
    void (*backend_accept)(struct llama_sampler *, void *, void *, struct ggml_tensor *);
    void (*backend_apply)(struct llama_sampler *, void *, void *, struct llama_sampler_data *);
    void (*backend_set_input)(struct llama_sampler *);
    void (*backend_reset)(struct llama_sampler *);
    void (*copy_state)(const struct llama_sampler *, struct llama_sampler *);
};

struct llama_sampler {
    struct llama_sampler_i *iface;
    void *ctx;
};

/* The ggml functions used, filled in by Python in this order. */
typedef struct ggml_tensor *T;
struct rag_ggml {
    T (*argmax)(void *ctx, T a);
    T (*get_rows)(void *ctx, T a, T b);
    T (*reshape_1d)(void *ctx, T a, int64_t ne0);
    T (*reshape_2d)(void *ctx, T a, int64_t ne0, int64_t ne1);
    T (*reshape_3d)(void *ctx, T a, int64_t ne0, int64_t ne1, int64_t ne2);
    T (*cast)(void *ctx, T a, int type);
    T (*scale)(void *ctx, T a, float s);
    T (*add)(void *ctx, T a, T b);
    T (*view_1d)(void *ctx, T a, int64_t ne0, size_t offset);
    bool (*is_contiguous)(const struct ggml_tensor *a);
    int64_t (*nelements)(const struct ggml_tensor *a);
};

enum { GGML_TYPE_F32 = 0, GGML_TYPE_I32 = 26 };

/* What the samplers of one model share: the ggml functions, how the argmax
 * is built (one_argmax), and the argmax of the logits tensor of the graph
 * being built (forgotten at each new graph: llama.cpp resets every chain
 * before it applies them). */
struct rag_bg_shared {
    struct rag_ggml g;
    int one_argmax;
    void *ctx;
    T parent;
    T argmax;
};

struct rag_bg {
    struct rag_bg_shared *shared;
};

/* Sizes and offsets for Python to check against its own view of the structs:
 * ggml_tensor's size, view_src and view_offs, llama_sampler_i's size. */
void rag_bg_layout(size_t out[4]) {
    out[0] = sizeof(struct ggml_tensor);
    out[1] = offsetof(struct ggml_tensor, view_src);
    out[2] = offsetof(struct ggml_tensor, view_offs);
    out[3] = sizeof(struct llama_sampler_i);
}

struct rag_bg_shared *rag_bg_shared_new(const struct rag_ggml *g, int one_argmax) {
    struct rag_bg_shared *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->g = *g;
        s->one_argmax = one_argmax;
    }
    return s;
}

void rag_bg_shared_free(struct rag_bg_shared *s) { free(s); }

static void forget(struct rag_bg_shared *s) {
    s->ctx = NULL;
    s->parent = NULL;
    s->argmax = NULL;
}

/* The argmax of each row of logits [n_vocab, rows] as I32 [rows]. With
 * one_argmax, one ggml_argmax (a CUDA kernel that splits each row across
 * thread blocks itself: scripts/patches/llama.cpp-argmax-split.patch). Else
 * in two stages (one thread block per chunk, not one per 262,144-value row,
 * as stock CUDA's argmax has it): the argmax within each chunk of C values,
 * the chunk maxima gathered, their argmax, and the token id chunk * C +
 * offset computed in F32 (exact below 2**24). The same graph as sampler.py's
 * BatchGreedy._argmax_rows. */
static T argmax_rows(const struct rag_ggml *g, int one_argmax, void *ctx, T logits, int64_t n_vocab, int64_t rows) {
    if (one_argmax) {
        return g->argmax(ctx, logits);
    }
    int64_t chunk = 0;
    static const int64_t sizes[] = {1024, 512, 256};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (n_vocab % sizes[i] == 0 && n_vocab / sizes[i] >= 8) {
            chunk = sizes[i];
            break;
        }
    }
    if (chunk == 0) {
        return g->argmax(ctx, logits);
    }
    const int64_t n_chunks = n_vocab / chunk;
    const int64_t m = n_chunks * rows;
    T within = g->argmax(ctx, g->reshape_2d(ctx, logits, chunk, m));
    T maxima = g->get_rows(ctx, g->reshape_3d(ctx, logits, 1, chunk, m), g->reshape_2d(ctx, within, 1, m));
    T best = g->argmax(ctx, g->reshape_2d(ctx, maxima, n_chunks, rows));
    T offset = g->get_rows(ctx, g->reshape_3d(ctx, within, 1, n_chunks, rows), g->reshape_2d(ctx, best, 1, rows));
    T token = g->add(ctx, g->scale(ctx, g->cast(ctx, best, GGML_TYPE_F32), (float)chunk),
                     g->cast(ctx, g->reshape_1d(ctx, offset, rows), GGML_TYPE_F32));
    return g->cast(ctx, token, GGML_TYPE_I32);
}

static void bg_backend_apply(struct llama_sampler *smpl, void *ctx, void *gf, struct llama_sampler_data *data) {
    (void)gf;
    struct rag_bg_shared *s = ((struct rag_bg *)smpl->ctx)->shared;
    const struct rag_ggml *g = &s->g;
    T t = data->logits;
    T p = t->view_src;
    if (p != NULL) {
        const size_t row_bytes = p->nb[1];
        if (p->ne[0] == t->ne[0] && p->ne[2] == 1 && p->ne[3] == 1 && t->ne[1] == 1 && row_bytes != 0 &&
            t->view_offs % row_bytes == 0 && g->is_contiguous(p)) {
            if (s->ctx != ctx || s->parent != p || s->argmax == NULL) {
                s->ctx = ctx;
                s->parent = p;
                s->argmax = argmax_rows(g, s->one_argmax, ctx, p, p->ne[0], p->ne[1]);
            }
            data->sampled = g->view_1d(ctx, s->argmax, 1, 4 * (t->view_offs / row_bytes));
            return;
        }
    }
    data->sampled = g->argmax(ctx, g->reshape_1d(ctx, t, g->nelements(t)));
}

static void bg_backend_reset(struct llama_sampler *smpl) { forget(((struct rag_bg *)smpl->ctx)->shared); }

static bool bg_backend_init(struct llama_sampler *smpl, void *buft, uint32_t n_outputs_max_per_seq) {
    (void)smpl;
    (void)buft;
    (void)n_outputs_max_per_seq;
    return true;
}

/* Greedy on the host, for a row llama.cpp did not sample in the graph. */
static void bg_apply(struct llama_sampler *smpl, llama_token_data_array *cur_p) {
    (void)smpl;
    if (cur_p->size == 0) {
        return;
    }
    size_t best = 0;
    for (size_t i = 1; i < cur_p->size; i++) {
        if (cur_p->data[i].logit > cur_p->data[best].logit) {
            best = i;
        }
    }
    cur_p->selected = (int64_t)best;
}

static const char *bg_name(const struct llama_sampler *smpl) {
    (void)smpl;
    return "batch-greedy";
}

static void bg_free(struct llama_sampler *smpl) { free(smpl->ctx); }

static struct llama_sampler_i bg_iface = {
    .name = bg_name,
    .apply = bg_apply,
    .free = bg_free,
    .backend_init = bg_backend_init,
    .backend_apply = bg_backend_apply,
    .backend_reset = bg_backend_reset,
};

struct llama_sampler_i *rag_bg_iface(void) { return &bg_iface; }

/* The context of one more sampler (for llama_sampler_init with rag_bg_iface);
 * a new sampler starts a new graph's sharing. Freed by llama_sampler_free. */
struct rag_bg *rag_bg_new(struct rag_bg_shared *s) {
    struct rag_bg *b = malloc(sizeof *b);
    if (b != NULL) {
        b->shared = s;
        forget(s);
    }
    return b;
}

/* llama.cpp's log, quietly: warnings and errors to stderr, the rest dropped.
 * llama-cpp-python's callback is a call into Python for every line, debug
 * lines included (one for each reused CUDA graph), made inside llama_decode.
 * Levels: ggml_log_level (3 warning, 4 error, 5 continuation). */
static int last_level = 0;

void rag_quiet_log(int level, const char *text, void *user_data) {
    (void)user_data;
    if (level != 5) {
        last_level = level;
    }
    if (last_level >= 3) {
        fputs(text, stderr);
    }
}

/* The tokens sampled in the graph for batch rows 0 … n-1, read in one call
 * (get: llama_get_sampled_token_ith): a step of 64 next tokens made 64 calls
 * from Python between the step's end and the next one's start. Returns the
 * rows read before one had no sampled token (LLAMA_TOKEN_NULL). */
typedef int32_t (*rag_token_ith)(void *ctx, int32_t i);

int32_t rag_sampled_tokens(rag_token_ith get, void *ctx, int32_t n, int32_t *out) {
    for (int32_t i = 0; i < n; i++) {
        const int32_t token = get(ctx, i);
        if (token < 0) {
            return i;
        }
        out[i] = token;
    }
    return n;
}
