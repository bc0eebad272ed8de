/*
 * plain_sgns.c: the reference C loop for the kernel micro-benchmark.
 *
 * One "update" is what the Cython kernel does for one user->item event:
 * a positive pair (user_vectors[u], item_vectors[i]) and `negatives` noise
 * items, plain SGD in word2vec's order (accumulate the gradient of the user
 * row, update each item row as it is visited, then the user row), float32.
 * bench_kernel.py compiles this file at run time with `cc -O3 -march=native`,
 * with the kernel's headers on the include path (the dot product is the
 * kernel's own), and compares the kernel against it; no binary is committed.
 *
 * Usage:
 *   plain_sgns MATH SAMPLER N_USERS N_ITEMS DIM NEGATIVES N_UPDATES REPEATS SEED
 *              [BLAS_LIBRARY BLAS_PREFIX]
 *   MATH     loop  (hand-written dot/axpy loops, left to the compiler to vectorise)
 *            blas  (each dot is cblas_sdot, each axpy cblas_saxpy, resolved by dlopen
 *                   from BLAS_LIBRARY with symbol prefix BLAS_PREFIX, e.g. "scipy_")
 *   SAMPLER  stream  (negatives read from a precomputed array of draws)
 *            alias   (Walker alias table: one random number, O(1))
 *            bsearch (binary search over the cumulative noise table, O(log n_items))
 *
 * Prints one line per repeat: "updates_per_second=<float> seconds=<float>".
 *
 * The noise distribution is Zipf-like counts (count_i = 1e6 / (rank + 1)) raised
 * to 0.75, the same shape as real item popularity; positive items are drawn from
 * the same counts and users uniformly, so with large tables most user rows and
 * many item rows miss every cache, as they would on a real stream.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "vecmath.h"  /* from cython_src/i2v_stream: bench_kernel.py passes -I */

typedef float (*sdot_fn)(int, const float *, int, const float *, int);
typedef void (*saxpy_fn)(int, float, const float *, int, float *, int);

static sdot_fn blas_sdot;
static saxpy_fn blas_saxpy;

/* splitmix64: small, fast, good enough to draw benchmark indices. */
static inline uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline double next_uniform(uint64_t *state) {
    return (next_random(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* The kernel's own dot product (four independent vector accumulators): the loop
 * arithmetic is the same on both sides, so the comparison measures the rest. */
static inline float loop_dot(int n, const float *x, const float *y) {
    return i2v_dot(n, x, y);
}

/* gradient += g * item_row, then item_row += g * user_row, in one pass. */
static inline void loop_context_step(int n, float g, const float *user_row, float *item_row,
                                     float *gradient) {
    for (int d = 0; d < n; d++) {
        float c = item_row[d];
        gradient[d] += g * c;
        item_row[d] = c + g * user_row[d];
    }
}

static inline void loop_axpy(int n, float a, const float *x, float *y) {
    for (int d = 0; d < n; d++) y[d] += a * x[d];
}

static inline float sigmoid(float x) {
    /* Clamped like word2vec's table lookup, so both ends cost the same. */
    if (x > 6.0f) x = 6.0f;
    if (x < -6.0f) x = -6.0f;
    return 1.0f / (1.0f + expf(-x));
}

typedef struct {
    int n_items;
    double *cumulative;  /* bsearch: cumulative probabilities, last = 1 */
    float *alias_prob;   /* alias: probability of keeping column j (float, as the kernel) */
    int32_t *alias;      /* alias: the other item in column j */
    int32_t *stream;     /* stream: precomputed draws, cycled */
    int64_t stream_size;
    int64_t stream_pos;
} Sampler;

static void build_sampler(Sampler *s, const double *weights, int n_items, int64_t stream_size,
                          uint64_t *rng) {
    double total = 0.0;
    for (int j = 0; j < n_items; j++) total += weights[j];

    s->n_items = n_items;
    s->cumulative = malloc(sizeof(double) * n_items);
    double running = 0.0;
    for (int j = 0; j < n_items; j++) {
        running += weights[j] / total;
        s->cumulative[j] = running;
    }
    s->cumulative[n_items - 1] = 1.0;

    /* Vose's alias method: split columns into those below and above the mean. */
    s->alias_prob = malloc(sizeof(float) * n_items);
    s->alias = malloc(sizeof(int32_t) * n_items);
    int32_t *small = malloc(sizeof(int32_t) * n_items);
    int32_t *large = malloc(sizeof(int32_t) * n_items);
    double *scaled = malloc(sizeof(double) * n_items);
    int n_small = 0, n_large = 0;
    for (int j = 0; j < n_items; j++) {
        scaled[j] = weights[j] / total * n_items;
        if (scaled[j] < 1.0) small[n_small++] = j; else large[n_large++] = j;
    }
    while (n_small > 0 && n_large > 0) {
        int32_t low = small[--n_small], high = large[--n_large];
        s->alias_prob[low] = (float)scaled[low];
        s->alias[low] = high;
        scaled[high] = scaled[high] + scaled[low] - 1.0;
        if (scaled[high] < 1.0) small[n_small++] = high; else large[n_large++] = high;
    }
    while (n_large > 0) { int32_t j = large[--n_large]; s->alias_prob[j] = 1.0; s->alias[j] = j; }
    while (n_small > 0) { int32_t j = small[--n_small]; s->alias_prob[j] = 1.0; s->alias[j] = j; }
    free(small);
    free(large);
    free(scaled);

    s->stream_size = stream_size;
    s->stream_pos = 0;
    s->stream = malloc(sizeof(int32_t) * stream_size);
    for (int64_t k = 0; k < stream_size; k++) {
        double r = next_uniform(rng);
        int32_t j = (int32_t)(r * n_items);
        if (j >= n_items) j = n_items - 1;
        s->stream[k] = next_uniform(rng) < s->alias_prob[j] ? j : s->alias[j];
    }
}

static inline int32_t draw_bsearch(const Sampler *s, uint64_t *rng) {
    double r = next_uniform(rng);
    int lo = 0, hi = s->n_items - 1;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (s->cumulative[mid] < r) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static inline int32_t draw_alias(const Sampler *s, uint64_t *rng) {
    /* One 64-bit draw gives both the column (high bits) and the coin (low bits). */
    uint64_t bits = next_random(rng);
    int32_t j = (int32_t)(((bits >> 32) * (uint64_t)s->n_items) >> 32);
    float coin = (bits & 0xFFFFFFULL) * (1.0f / 16777216.0f);
    return coin < s->alias_prob[j] ? j : s->alias[j];
}

static inline int32_t draw_stream(Sampler *s) {
    int32_t j = s->stream[s->stream_pos];
    if (++s->stream_pos == s->stream_size) s->stream_pos = 0;
    return j;
}

enum { SAMPLER_STREAM, SAMPLER_ALIAS, SAMPLER_BSEARCH };

/* The measured loop. USE_BLAS and SAMPLER are compile-time constants at each call site,
 * so the compiler specialises the loop and the branches cost nothing. */
static inline void train(int use_blas, int sampler_kind, Sampler *sampler, uint64_t *rng,
                         float *user_vectors, float *item_vectors, int dim, int negatives,
                         const int32_t *pair_users, const int32_t *pair_items,
                         int64_t n_updates, float learning_rate, float *gradient) {
    int32_t rows[65];
    for (int64_t e = 0; e < n_updates; e++) {
        float *user_row = user_vectors + (int64_t)pair_users[e] * dim;
        int32_t positive = pair_items[e];

        /* All draws first, then the arithmetic (as the kernel does): the loads of the
         * sampler tables are independent, so they overlap instead of waiting in turn. */
        int n_rows = 1;
        rows[0] = positive;
        for (int k = 0; k < negatives; k++) {
            int32_t item;
            if (sampler_kind == SAMPLER_STREAM) item = draw_stream(sampler);
            else if (sampler_kind == SAMPLER_ALIAS) item = draw_alias(sampler, rng);
            else item = draw_bsearch(sampler, rng);
            if (item != positive) rows[n_rows++] = item;
        }

        memset(gradient, 0, sizeof(float) * dim);
        for (int k = 0; k < n_rows; k++) {
            float label = k == 0 ? 1.0f : 0.0f;
            float *item_row = item_vectors + (int64_t)rows[k] * dim;
            float score = use_blas ? blas_sdot(dim, user_row, 1, item_row, 1)
                                   : loop_dot(dim, user_row, item_row);
            float g = (label - sigmoid(score)) * learning_rate;
            if (use_blas) {
                blas_saxpy(dim, g, item_row, 1, gradient, 1);
                blas_saxpy(dim, g, user_row, 1, item_row, 1);
            } else {
                loop_context_step(dim, g, user_row, item_row, gradient);
            }
        }

        if (use_blas) blas_saxpy(dim, 1.0f, gradient, 1, user_row, 1);
        else loop_axpy(dim, 1.0f, gradient, user_row);
    }
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *checked_malloc(size_t size, const char *what) {
    void *p = malloc(size);
    if (p == NULL) {
        fprintf(stderr, "plain_sgns: cannot allocate %zu bytes for %s\n", size, what);
        exit(2);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 10 && argc != 12) {
        fprintf(stderr, "usage: %s loop|blas stream|alias|bsearch N_USERS N_ITEMS DIM "
                        "NEGATIVES N_UPDATES REPEATS SEED [BLAS_LIBRARY BLAS_PREFIX]\n",
                argv[0]);
        return 2;
    }
    int use_blas = strcmp(argv[1], "blas") == 0;
    int sampler_kind = strcmp(argv[2], "stream") == 0  ? SAMPLER_STREAM
                       : strcmp(argv[2], "alias") == 0 ? SAMPLER_ALIAS
                                                       : SAMPLER_BSEARCH;
    int n_users = atoi(argv[3]), n_items = atoi(argv[4]);
    int dim = atoi(argv[5]), negatives = atoi(argv[6]);
    int64_t n_updates = atoll(argv[7]);
    int repeats = atoi(argv[8]);
    uint64_t rng = strtoull(argv[9], NULL, 10);
    if (negatives < 0 || negatives > 64) {
        fprintf(stderr, "plain_sgns: NEGATIVES must be in [0, 64], got %d\n", negatives);
        return 2;
    }

    if (use_blas) {
        if (argc != 12) {
            fprintf(stderr, "plain_sgns: MATH=blas needs BLAS_LIBRARY and BLAS_PREFIX\n");
            return 2;
        }
        void *library = dlopen(argv[10], RTLD_NOW | RTLD_LOCAL);
        if (library == NULL) {
            fprintf(stderr, "plain_sgns: dlopen failed: %s\n", dlerror());
            return 2;
        }
        char name[256];
        snprintf(name, sizeof name, "%scblas_sdot", argv[11]);
        blas_sdot = (sdot_fn)dlsym(library, name);
        snprintf(name, sizeof name, "%scblas_saxpy", argv[11]);
        blas_saxpy = (saxpy_fn)dlsym(library, name);
        if (blas_sdot == NULL || blas_saxpy == NULL) {
            fprintf(stderr, "plain_sgns: %scblas_sdot/%scblas_saxpy not found in %s\n",
                    argv[11], argv[11], argv[10]);
            return 2;
        }
    }

    /* Tables initialised like word2vec (user rows small uniform); item rows get small
     * values too instead of zeros so the dot products are not trivially zero. */
    float *user_vectors = checked_malloc(sizeof(float) * (size_t)n_users * dim, "users");
    float *item_vectors = checked_malloc(sizeof(float) * (size_t)n_items * dim, "items");
    for (size_t k = 0; k < (size_t)n_users * dim; k++)
        user_vectors[k] = (float)(next_uniform(&rng) - 0.5) / dim;
    for (size_t k = 0; k < (size_t)n_items * dim; k++)
        item_vectors[k] = (float)(next_uniform(&rng) - 0.5) / dim;

    /* Zipf-like popularity, scattered over the ids by a random permutation so that the
     * popular rows are not neighbours in memory (they are not in a real table either). */
    int32_t *permutation = checked_malloc(sizeof(int32_t) * n_items, "permutation");
    for (int j = 0; j < n_items; j++) permutation[j] = j;
    for (int j = n_items - 1; j > 0; j--) {
        int r = (int)(next_random(&rng) % (uint64_t)(j + 1));
        int32_t t = permutation[j]; permutation[j] = permutation[r]; permutation[r] = t;
    }
    double *weights = checked_malloc(sizeof(double) * n_items, "weights");
    for (int rank = 0; rank < n_items; rank++)
        weights[permutation[rank]] = pow(1e6 / (rank + 1.0), 0.75);
    Sampler sampler;
    int64_t stream_size = n_updates * negatives;
    if (stream_size > (1LL << 26)) stream_size = 1LL << 26;
    build_sampler(&sampler, weights, n_items, stream_size, &rng);

    /* Positive pairs are precomputed so that drawing them costs the same in every
     * variant and is not part of the measured loop. */
    int32_t *pair_users = checked_malloc(sizeof(int32_t) * n_updates, "pair users");
    int32_t *pair_items = checked_malloc(sizeof(int32_t) * n_updates, "pair items");
    for (int64_t e = 0; e < n_updates; e++) {
        pair_users[e] = (int32_t)(next_random(&rng) % (uint64_t)n_users);
        pair_items[e] = draw_alias(&sampler, &rng);
    }

    float *gradient = checked_malloc(sizeof(float) * dim, "gradient");
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        if (use_blas) {
            if (sampler_kind == SAMPLER_STREAM)
                train(1, SAMPLER_STREAM, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
            else if (sampler_kind == SAMPLER_ALIAS)
                train(1, SAMPLER_ALIAS, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
            else
                train(1, SAMPLER_BSEARCH, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
        } else {
            if (sampler_kind == SAMPLER_STREAM)
                train(0, SAMPLER_STREAM, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
            else if (sampler_kind == SAMPLER_ALIAS)
                train(0, SAMPLER_ALIAS, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
            else
                train(0, SAMPLER_BSEARCH, &sampler, &rng, user_vectors, item_vectors, dim,
                      negatives, pair_users, pair_items, n_updates, 0.025f, gradient);
        }
        double seconds = now_seconds() - start;
        printf("updates_per_second=%.1f seconds=%.6f\n", n_updates / seconds, seconds);
        fflush(stdout);
    }

    /* A checksum keeps the compiler from dropping the work. */
    double checksum = 0.0;
    for (int d = 0; d < dim; d++) checksum += user_vectors[d] + item_vectors[d];
    printf("checksum=%.6f\n", checksum);
    return 0;
}
