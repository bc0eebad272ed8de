# C surface of the exact top-N kernel (_topn.pyx).
#
# A first pass scores every item from an int8 copy of the item matrix (a
# quarter of the memory traffic of float32) together with a bound on the
# quantisation error; only the rows whose upper bound can reach the k-th best
# lower bound are rescored exactly by the caller.

from libc.stdint cimport int8_t, int64_t, uint8_t

cdef int64_t bounded_candidates(
    const uint8_t *codes, const float *scales, const float *norms_l1, const float *prior,
    int64_t n_rows, int dim, const int8_t *query_codes, float query_scale,
    float query_codes_l1, int64_t k, const int64_t *exclude, int64_t n_exclude,
    float *upper, int64_t *out,
) noexcept nogil
