# cython: language_level=3
"""Exact top-N over a large item matrix, with an int8 first pass.

A single recommendation reads the whole item matrix; at 100,000 items x 100
float32 that is 40 MB per query and memory bandwidth, not arithmetic, bounds
the rate. This kernel keeps an int8 copy (one scale per row: ``codes * scale``
approximates the row within ``scale / 2`` per coordinate) and answers in two
steps:

1. quantise the query the same way and score every row with an exact integer
   dot product: ``approx = scale * query_scale * (codes . query_codes) + prior``;
   the true score lies within
   ``query_scale / 2 * (||row||_1 + scale * ||query_codes||_1)`` of it;
2. the k-th largest lower bound is a floor that the true k-th best score
   reaches, so every row whose upper bound is below it can be dropped; the
   rows left (usually a few dozen) are the candidates.

The caller rescores the candidates with the float32 rows, so the final top-N
is exact, not approximate.
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, fabs
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "topn_simd.h" nogil:
    int I2V_NATIVE
    void i2v_code_dots(const uint8_t *codes, int64_t n_rows, int width,
                       const int8_t *query, int32_t *out)
    int i2v_fast_int8()

NATIVE_BUILD = bool(I2V_NATIVE)
# The byte dot product beats one BLAS float32 matrix-vector product only with
# the CPU's byte multiply-adds (VNNI on x86-64, in native and portable builds
# alike: topn_simd.h); elsewhere the reader uses the float32 product.
FAST_INT8 = bool(i2v_fast_int8())

DEF PAD = 64
DEF CHUNK_ROWS = 1024


cdef inline void sift_down(float *heap, int64_t size, int64_t start) noexcept nogil:
    # Min-heap of the k best lower bounds; heap[0] is the current floor.
    cdef int64_t parent = start, child
    cdef float value = heap[start]
    while True:
        child = 2 * parent + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[parent] = heap[child]
        parent = child
    heap[parent] = value


cdef int64_t bounded_candidates(
    const uint8_t *codes, const float *scales, const float *norms_l1, const float *prior,
    int64_t n_rows, int width, const int8_t *query_codes, float query_scale,
    float query_codes_l1, int64_t k, const int64_t *exclude, int64_t n_exclude,
    float *upper, int64_t *out,
) noexcept nogil:
    """Write the candidate rows to ``out`` and return how many there are.

    ``exclude`` (ascending) rows are never candidates and take no place among
    the ``k`` best.
    """
    cdef int64_t row, start, size = 0, n_out = 0, e = 0
    cdef int d, j, m
    cdef int32_t offset = 0
    cdef float approx, error, floor
    cdef float scale_q = query_scale, half_q = <float>0.5 * query_scale
    cdef float slack = <float>1.0001, tiny = <float>1e-30
    cdef float *heap = <float *>malloc(k * sizeof(float))
    cdef int32_t totals[CHUNK_ROWS]
    cdef float lower[CHUNK_ROWS]
    if heap == NULL:
        return -1

    # Codes are stored shifted by +128 (unsigned): an unsigned x signed byte
    # dot product is what CPUs with VNNI do in one instruction per 64 bytes
    # (i2v_code_dots, topn_simd.h); the shift is undone with the sum of the
    # query codes.
    for d in range(width):
        offset += 128 * query_codes[d]

    # Step 1, a chunk of rows at a time: integer dots, then approximate scores
    # and bounds (a loop without branches, which the compiler vectorises),
    # then the k best lower bounds.
    for start in range(0, n_rows, CHUNK_ROWS):
        m = <int>min(<int64_t>CHUNK_ROWS, n_rows - start)
        i2v_code_dots(codes + start * width, m, width, query_codes, totals)
        for j in range(m):
            row = start + j
            approx = scales[row] * scale_q * <float>(totals[j] - offset)
            if prior != NULL:  # loop-invariant: the compiler makes two loops
                approx = approx + prior[row]
            # |v.u - approx| <= |v.(u - sq cq)| + |(v - s c).sq cq|
            error = half_q * (norms_l1[row] + scales[row] * query_codes_l1) * slack + tiny
            upper[row] = approx + error
            lower[j] = approx - error
        while e < n_exclude and exclude[e] < start + m:
            if exclude[e] >= start:
                upper[exclude[e]] = -INFINITY
                lower[exclude[e] - start] = -INFINITY
            e += 1
        for j in range(m):
            if size < k:
                heap[size] = lower[j]
                size += 1
                if size == k:
                    for d in range(<int>(k // 2), -1, -1):
                        sift_down(heap, k, d)
            elif lower[j] > heap[0]:
                heap[0] = lower[j]
                sift_down(heap, k, 0)

    # Step 2: every row that could still reach the floor.
    floor = -3.4e38
    if size == k:
        floor = heap[0]
    for row in range(n_rows):
        if upper[row] >= floor and upper[row] > -INFINITY:
            out[n_out] = row
            n_out += 1
    free(heap)
    return n_out


def quantize_rows(rows):
    """int8 codes (stored +128 as uint8), per-row scales and L1 norms of a matrix.

    Returns ``(codes uint8 (n, width), scales float32 (n,), l1 float32 (n,))``
    where ``width`` is ``dim`` rounded up to a multiple of 64 (zero codes,
    stored as 128) and ``|rows - (codes[:, :dim] - 128) * scales[:, None]|``
    is at most ``scales / 2`` elementwise.
    """
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-dimensional, got shape {rows.shape}")
    n, dim = rows.shape
    peak = np.abs(rows).max(axis=1) if dim else np.zeros(n, np.float32)
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.full((n, max(-(-dim // PAD) * PAD, PAD)), 128, dtype=np.uint8)
    codes[:, :dim] = (np.clip(np.rint(rows / safe[:, None]), -127, 127) + 128).astype(np.uint8)
    return codes, scales, np.abs(rows).sum(axis=1).astype(np.float32)


def candidates(codes, scales, norms_l1, query, prior, long long k, exclude=None):
    """Rows that may belong to the top ``k`` by ``rows @ query + prior``.

    Parameters
    ----------
    codes, scales, norms_l1 : what :func:`quantize_rows` returned
    query : float32 array (dim,)
    prior : float32 array (n,) or None
        Added to every score.
    k : int
        How many best rows must be among the candidates (>= 1).
    exclude : int array or None
        Rows that are never candidates and do not count among the ``k`` best.

    Returns
    -------
    int64 array of candidate rows, ascending; it contains the true top ``k``.
    """
    cdef cnp.ndarray c = np.ascontiguousarray(codes, dtype=np.uint8)
    cdef cnp.ndarray s = np.ascontiguousarray(scales, dtype=np.float32)
    cdef cnp.ndarray l1 = np.ascontiguousarray(norms_l1, dtype=np.float32)
    cdef cnp.ndarray p
    cdef const float *prior_ptr = NULL
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-dimensional, got shape {np.shape(codes)}")
    cdef int64_t n_rows = c.shape[0]
    cdef int width = c.shape[1]
    if s.shape[0] != n_rows or l1.shape[0] != n_rows:
        raise ValueError(f"scales and norms_l1 must have {n_rows} entries")
    query = np.asarray(query, dtype=np.float32)
    if query.ndim != 1 or query.shape[0] > width:
        raise ValueError(f"query must have shape (<={width},), got {query.shape}")
    if prior is not None:
        p = np.ascontiguousarray(prior, dtype=np.float32)
        if p.ndim != 1 or p.shape[0] < n_rows:
            raise ValueError(f"prior must have at least {n_rows} entries")
        prior_ptr = <const float *>p.data
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cdef cnp.ndarray ex = np.unique(np.asarray([] if exclude is None else exclude,
                                               dtype=np.int64))
    cdef int64_t n_exclude = ex.shape[0]
    if k >= n_rows:
        return np.setdiff1d(np.arange(n_rows, dtype=np.int64), ex)

    # The query is quantised like a row, into the same padded width.
    peak = float(np.abs(query).max()) if query.size else 0.0
    cdef float query_scale = peak / 127.0 if peak > 0 else 1.0
    cdef cnp.ndarray q = np.zeros(width, dtype=np.int8)
    q[:query.shape[0]] = np.clip(np.rint(query / query_scale), -127, 127)
    cdef float q_l1 = float(np.abs(q.astype(np.int32)).sum())
    cdef cnp.ndarray upper = np.empty(n_rows, dtype=np.float32)
    cdef cnp.ndarray out = np.empty(n_rows, dtype=np.int64)
    cdef int64_t n_out
    with nogil:
        n_out = bounded_candidates(
            <const uint8_t *>c.data, <const float *>s.data, <const float *>l1.data, prior_ptr,
            n_rows, width, <const int8_t *>q.data, query_scale, q_l1, k,
            <const int64_t *>ex.data, n_exclude, <float *>upper.data, <int64_t *>out.data)
    if n_out < 0:
        raise MemoryError()
    return out[:n_out]


def set_rows(codes, scales, norms_l1, rows, vectors):
    """Re-quantise ``rows`` (int array) of a quantised matrix from float ``vectors``."""
    new_codes, new_scales, new_l1 = quantize_rows(vectors)
    codes[rows] = new_codes[:, : codes.shape[1]]
    scales[rows] = new_scales
    norms_l1[rows] = new_l1
