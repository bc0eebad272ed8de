# C surface of the SGNS kernel (sgns.pyx).
#
# The kernel trains one batch of (user row, item row) events with skip-gram and
# negative sampling. Everything here runs without the GIL on raw pointers; the
# Python-facing functions in sgns.pyx validate arrays and fill a TrainBatch.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

ctypedef float real_t

cdef struct NoiseTable:
    # Walker/Vose alias table over item rows 0..n_rows-1.
    const float *prob
    const int32_t *alias
    int64_t n_rows


cdef struct TrainBatch:
    # Tables, row-major, dim columns.
    real_t *user_vectors
    real_t *item_vectors            # context side of every pair
    real_t *item_input_vectors      # target side of item->item pairs (NULL: off)
    int dim

    # Events.
    const int32_t *user_rows
    const int32_t *item_rows
    int64_t n_events

    # Per-row bookkeeping, updated as events are applied.
    int64_t *user_cursor            # events of each user seen so far (ring position)
    int64_t *item_counts            # noise/subsampling counts, updated if update_counts
    int32_t *recent_items           # (n_users, history_size) ring of item rows
    int history_size
    uint8_t *user_dirty
    uint8_t *item_dirty
    int update_counts
    int64_t total_count             # sum of item_counts, kept in step with it

    # Hyperparameters.
    NoiseTable noise
    int negatives
    int window
    double sample                   # subsampling threshold, 0 = off
    const double *keep_prob         # per item row, when the counts are fixed (NULL: online)
    double learning_rate            # for the first event of the batch
    double learning_rate_step       # decrease per event
    double min_learning_rate
    double l2
    int exact_sigmoid
    int repeats                     # SGD steps per trained event
    int use_blas                    # BLAS calls (1) or compiler-vectorised loops (0)

    # Randomness: event e uses a stream seeded from (seed, first_sequence + e).
    uint64_t seed
    int64_t first_sequence

    # Outputs.
    double loss
    int64_t trained_pairs
    int64_t trained_events


cdef void train_batch(TrainBatch *batch, real_t *work) noexcept nogil

cdef double sgns_pair_update(
    real_t *target, real_t *item_vectors, int dim, int32_t positive,
    const int32_t *negative_rows, int n_negatives, double learning_rate, double l2,
    int exact_sigmoid, real_t *work, uint8_t *item_dirty, int use_blas,
) noexcept nogil
