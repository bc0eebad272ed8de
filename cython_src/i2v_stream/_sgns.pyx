# cython: language_level=3
"""Skip-gram with negative sampling (SGNS) kernel for Interact2Vec.

One call of :func:`train_events` applies a batch of (user row, item row) events
in order, without the GIL:

1. the event's random stream is seeded from ``(seed, sequence number)``, so a
   result does not depend on how a stream of events is cut into batches;
2. the item's count (and the total) is incremented when counts are online;
3. the event is kept with the word2vec subsampling probability;
4. user -> item: the user row is the target, the item row and ``negatives``
   noise rows (alias-table draws, redrawn when equal to the item) the context;
5. item -> item (``window > 0``): each of the user's last ``window`` items is a
   target against the same positive item, with fresh negatives;
6. the item enters the user's ring of recent items.

Plain SGD as in word2vec: the target's gradient is accumulated over the
positive and its negatives while each context row is updated as it is visited,
then the target row moves. Names map onto the C word2vec tool as follows:
``user_vectors``/``item_input_vectors`` are its input table (syn0), ``item_vectors``
its output table (syn1neg), ``work`` its hidden-error buffer (neu1e).

The noise table is read-only during a batch; the caller rebuilds it between
batches from the counts (see ``i2v_stream.model``). Threads may run
:func:`train_events` on disjoint event ranges of the same tables at once
(Hogwild): rows shared between threads are then updated without locks, and
results are only reproducible to a tolerance.
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport exp, log, log1p, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from scipy.linalg.cython_blas cimport saxpy, sdot, sscal

cnp.import_array()

cdef extern from *:
    """
    #ifndef I2V_NATIVE
    #define I2V_NATIVE 0
    #endif
    """
    int I2V_NATIVE

# Built with I2V_NATIVE=1 (-march=native, as `make` does): the loops are then
# vectorised with the machine's widest instructions. Either way they beat BLAS
# calls at small dims, and the kernel uses them unless told ``use_blas=True``.
NATIVE_BUILD = bool(I2V_NATIVE)

DEF MAX_EXP = 6.0
DEF TABLE_SIZE = 1024
DEF MAX_NEGATIVES = 64
DEF MAX_REDRAWS = 16

cdef float SIGMOID_TABLE[TABLE_SIZE + 1]
cdef float LOG_SIGMOID_TABLE[TABLE_SIZE + 1]
cdef int ONE = 1

cdef void _fill_tables() noexcept:
    cdef int k
    cdef double x
    for k in range(TABLE_SIZE + 1):
        x = (2.0 * k / TABLE_SIZE - 1.0) * MAX_EXP
        SIGMOID_TABLE[k] = 1.0 / (1.0 + exp(-x))
        LOG_SIGMOID_TABLE[k] = -log1p(exp(-x))

_fill_tables()

MAX_NEGATIVES_PER_PAIR = MAX_NEGATIVES


# ---------------------------------------------------------------------------
# Random numbers: splitmix64, one independent stream per event.

cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline uint64_t event_stream(uint64_t seed, int64_t sequence) noexcept nogil:
    # Two rounds of mixing decorrelate neighbouring sequence numbers.
    cdef uint64_t state = seed ^ (<uint64_t>sequence * <uint64_t>0xD1B54A32D192ED03)
    splitmix64(&state)
    return splitmix64(&state)


cdef inline double uniform01(uint64_t *state) noexcept nogil:
    return (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)


cdef inline int32_t draw_noise(const NoiseTable *noise, uint64_t *state) noexcept nogil:
    # Alias method: pick a cell uniformly (multiply-shift, no modulo bias worth
    # mentioning at 2^32 cells), then the cell's own row or its alias.
    cdef uint64_t r = splitmix64(state)
    cdef int64_t cell = <int64_t>(((r >> 32) * <uint64_t>noise.n_rows) >> 32)
    cdef float coin = (r & 0xFFFFFF) * (1.0 / 16777216.0)
    # Both candidates are loaded so that the choice compiles to a conditional
    # move: the coin is random, and a branch on it would mispredict half the time.
    cdef int32_t other = noise.alias[cell]
    return <int32_t>cell if coin < noise.prob[cell] else other


# ---------------------------------------------------------------------------
# Logistic function and its log, from tables or exact.

cdef inline double sigmoid(double x, int exact) noexcept nogil:
    if exact:
        return 1.0 / (1.0 + exp(-x))
    if x >= MAX_EXP:
        return 1.0
    if x <= -MAX_EXP:
        return 0.0
    return SIGMOID_TABLE[<int>((x + MAX_EXP) * (TABLE_SIZE / MAX_EXP / 2.0) + 0.5)]


cdef inline double log_sigmoid(double x, int exact) noexcept nogil:
    if exact or x >= MAX_EXP or x <= -MAX_EXP:
        if x >= 0:
            return -log1p(exp(-x))
        return x - log1p(exp(x))
    return LOG_SIGMOID_TABLE[<int>((x + MAX_EXP) * (TABLE_SIZE / MAX_EXP / 2.0) + 0.5)]


# ---------------------------------------------------------------------------
# Vector arithmetic: BLAS calls, or plain loops that the compiler vectorises.
# At small dims (around 100) a BLAS call costs about as much in dispatch as in
# arithmetic; benchmarks/bench_kernel.py measures both.

cdef extern from "vecmath.h" nogil:
    float i2v_dot(int n, const float *x, const float *y)


cdef inline float vdot(int n, const real_t *x, const real_t *y, int use_blas) noexcept nogil:
    if use_blas:
        return sdot(&n, <real_t *>x, &ONE, <real_t *>y, &ONE)
    return i2v_dot(n, x, y)


cdef inline void vdecay_axpy(int n, float decay, float a, const real_t *x, real_t *y,
                             int use_blas) noexcept nogil:
    # y = decay * y + a * x: weight decay and the step in one pass over y.
    cdef int k
    if use_blas:
        if decay != 1.0:
            sscal(&n, &decay, y, &ONE)
        saxpy(&n, &a, <real_t *>x, &ONE, y, &ONE)
        return
    if decay == 1.0:
        for k in range(n):
            y[k] += a * x[k]
        return
    for k in range(n):
        y[k] = decay * y[k] + a * x[k]


cdef inline void context_step(int n, float decay, float a, const real_t *target,
                              real_t *context, real_t *work, int use_blas) noexcept nogil:
    # work += a * context, then context = decay * context + a * target; the
    # loops do both in one pass over the context row.
    cdef int k
    cdef float c
    if use_blas:
        saxpy(&n, &a, <real_t *>context, &ONE, work, &ONE)
        vdecay_axpy(n, decay, a, target, context, use_blas)
        return
    for k in range(n):
        c = context[k]
        work[k] += a * c
        context[k] = decay * c + a * target[k]


cdef inline void push_history(int32_t *recent_items, int64_t *user_cursor, int history_size,
                              int32_t user, int32_t item) noexcept nogil:
    # The event enters its user's ring of recent items; the cursor counts it.
    if history_size > 0:
        recent_items[<int64_t>user * history_size + user_cursor[user] % history_size] = item
    user_cursor[user] += 1


# ---------------------------------------------------------------------------
# One SGNS step for one target row.

cdef double sgns_pair_update(
    real_t *target, real_t *item_vectors, int dim, int32_t positive,
    const int32_t *negative_rows, int n_negatives, double learning_rate, double l2,
    int exact_sigmoid, real_t *work, uint8_t *item_dirty, int use_blas,
) noexcept nogil:
    """Update ``target`` and the context rows of one positive and its negatives.

    Returns the loss -log s(t.v_pos) - sum log s(-t.v_neg) before the update.
    """
    cdef int d, k
    cdef int32_t row
    cdef real_t *context
    cdef float score, gradient
    cdef double loss = 0.0
    cdef float label
    cdef float decay = <float>(1.0 - learning_rate * l2) if l2 > 0.0 else 1.0

    memset(work, 0, dim * sizeof(real_t))
    for k in range(n_negatives + 1):
        if k == 0:
            row = positive
            label = 1.0
        else:
            row = negative_rows[k - 1]
            label = 0.0
        context = item_vectors + <int64_t>row * dim
        score = vdot(dim, target, context, use_blas)
        if label > 0.0:
            loss -= log_sigmoid(score, exact_sigmoid)
        else:
            loss -= log_sigmoid(-score, exact_sigmoid)

        # Gradient of the loss w.r.t. the score, times the learning rate;
        # the target's share waits in work, the context row moves now.
        gradient = <float>((label - sigmoid(score, exact_sigmoid)) * learning_rate)
        context_step(dim, decay, gradient, target, context, work, use_blas)
        if item_dirty != NULL:
            item_dirty[row] = 1

    vdecay_axpy(dim, decay, 1.0, work, target, use_blas)
    return loss


cdef inline double keep_probability(int64_t count, int64_t total, double sample
                                    ) noexcept nogil:
    # word2vec's subsampling: an item of frequency z is kept with probability
    # (sqrt(z / sample) + 1) * sample / z (1 or more: always kept).
    cdef double z
    if sample <= 0.0 or total <= 0 or count <= 0:
        return 1.0
    z = count / <double>total
    return (sqrt(z / sample) + 1.0) * sample / z


cdef inline int draw_negatives(
    const NoiseTable *noise, int32_t positive, int n_negatives, uint64_t *state,
    int32_t *out,
) noexcept nogil:
    # Negatives equal to the positive are redrawn a bounded number of times
    # (a catalogue dominated by one item would otherwise loop forever); a draw
    # that keeps hitting the positive is dropped.
    cdef int k, tries, n_out = 0
    cdef int32_t row
    if noise.n_rows == 0:
        return 0
    for k in range(n_negatives):
        for tries in range(MAX_REDRAWS):
            row = draw_noise(noise, state)
            if row != positive:
                out[n_out] = row
                n_out += 1
                break
    return n_out


# ---------------------------------------------------------------------------
# The batch.

cdef void train_batch(TrainBatch *b, real_t *work) noexcept nogil:
    cdef int64_t e, seen, slot
    cdef int32_t user, item, other
    cdef int w, r, n_drawn, dim = b.dim
    cdef uint64_t state
    cdef double lr, keep
    cdef int32_t negative_rows[MAX_NEGATIVES]
    cdef real_t *target

    for e in range(b.n_events):
        user = b.user_rows[e]
        item = b.item_rows[e]
        state = event_stream(b.seed, b.first_sequence + e)
        lr = b.learning_rate - e * b.learning_rate_step
        if lr < b.min_learning_rate:
            lr = b.min_learning_rate
        if b.update_counts:
            b.item_counts[item] += 1
            b.total_count += 1

        # Subsampling of frequent items, with the counts known so far.
        if b.keep_prob != NULL:
            keep = b.keep_prob[item]
        else:
            keep = keep_probability(b.item_counts[item], b.total_count, b.sample)
        if keep >= 1.0 or uniform01(&state) < keep:
            b.trained_events += 1
            # Several SGD steps per event, each with fresh negatives.
            for r in range(b.repeats):
                # user -> item
                target = b.user_vectors + <int64_t>user * dim
                n_drawn = draw_negatives(&b.noise, item, b.negatives, &state, negative_rows)
                b.loss += sgns_pair_update(
                    target, b.item_vectors, dim, item, negative_rows, n_drawn, lr, b.l2,
                    b.exact_sigmoid, work, b.item_dirty, b.use_blas,
                )
                b.trained_pairs += 1
                b.user_dirty[user] = 1

                # item -> item over the user's most recent items
                seen = b.user_cursor[user]
                for w in range(1, b.window + 1):
                    if w > seen or w > b.history_size:
                        break
                    slot = (seen - w) % b.history_size
                    other = b.recent_items[<int64_t>user * b.history_size + slot]
                    if other < 0:
                        break
                    target = b.item_input_vectors + <int64_t>other * dim
                    n_drawn = draw_negatives(
                        &b.noise, item, b.negatives, &state, negative_rows)
                    b.loss += sgns_pair_update(
                        target, b.item_vectors, dim, item, negative_rows, n_drawn, lr, b.l2,
                        b.exact_sigmoid, work, b.item_dirty, b.use_blas,
                    )
                    b.trained_pairs += 1
                    b.item_dirty[other] = 1

        # The event enters the user's history whether or not it was trained.
        push_history(b.recent_items, b.user_cursor, b.history_size, user, item)
        b.user_dirty[user] = 1
        b.item_dirty[item] = 1


# ---------------------------------------------------------------------------
# Python boundary.

cdef object _check(object array, str name, object dtype, int ndim):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not array.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return array


cdef tuple _check_events(object user_rows, object item_rows):
    ur = _check(user_rows, "user_rows", np.int32, 1)
    ir = _check(item_rows, "item_rows", np.int32, 1)
    if ur.shape[0] != ir.shape[0]:
        raise ValueError(
            f"user_rows and item_rows must have the same length, got "
            f"{ur.shape[0]} and {ir.shape[0]}")
    return ur, ir


cdef _check_rows(cnp.ndarray rows, str name, int64_t n_rows):
    if rows.shape[0] and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"{name} must be in [0, {n_rows}), got [{rows.min()}, "
                         f"{rows.max()}]")


def train_events(
    user_vectors, item_vectors, item_input_vectors,
    user_rows, item_rows,
    user_cursor, item_counts, recent_items, user_dirty, item_dirty,
    noise_prob, noise_alias,
    *,
    int negatives, int window, double sample,
    double learning_rate, double learning_rate_step=0.0, double min_learning_rate=0.0,
    double l2=0.0, bint exact_sigmoid=False, bint update_counts=True, int repeats=1,
    use_blas=None,
    long long total_count=0, unsigned long long seed=0, long long first_sequence=0,
):
    """Apply a batch of events in order, without the GIL.

    Parameters
    ----------
    user_vectors, item_vectors : float32 arrays, shape (capacity, dim), C order
        Target (user) and context (item) tables, updated in place.
    item_input_vectors : float32 array (capacity, dim) or None
        Target table of item -> item pairs; required when ``window > 0``.
    user_rows, item_rows : int32 arrays, shape (n_events,)
        Rows of each event; every row must exist in the tables.
    user_cursor : int64 array (n_users capacity,)
        Events seen per user (position in the ring); incremented per event.
    item_counts : int64 array (n_items capacity,)
        Counts used for subsampling; incremented per event if ``update_counts``.
    recent_items : int32 array (capacity, history_size)
        Ring of each user's recent item rows (-1 = empty); updated per event.
    user_dirty, item_dirty : uint8 arrays
        Set to 1 for every row this batch changes.
    noise_prob, noise_alias : float32 and int32 arrays (n_noise_rows,)
        Alias table over item rows 0..n_noise_rows-1; empty: no negatives.
    total_count : int
        Sum of ``item_counts`` before the batch.
    repeats : int
        SGD steps per trained event, each with fresh negatives.
    use_blas : bool or None
        BLAS sdot/saxpy (True) or plain loops (False); None: the loops, which
        are measured faster at dim 100 in native and portable builds alike
        (benchmarks/README.md, "Kernel arithmetic").
    seed, first_sequence : int
        Event ``e`` of the batch draws from the stream of
        ``(seed, first_sequence + e)``.

    Returns
    -------
    (loss, trained_pairs, trained_events, total_count) : (float, int, int, int)
        Summed loss over trained pairs, pairs and events trained, new total.
    """
    cdef TrainBatch b
    cdef real_t *work
    cdef cnp.ndarray uv, iv, wv, ur, ir, uc, ic, ri, ud, idt, np_, na

    uv = _check(user_vectors, "user_vectors", np.float32, 2)
    iv = _check(item_vectors, "item_vectors", np.float32, 2)
    if uv.shape[1] != iv.shape[1]:
        raise ValueError(
            f"user_vectors and item_vectors must have the same dim, got "
            f"{uv.shape[1]} and {iv.shape[1]}")
    dim = uv.shape[1]
    ur, ir = _check_events(user_rows, item_rows)
    uc = _check(user_cursor, "user_cursor", np.int64, 1)
    ic = _check(item_counts, "item_counts", np.int64, 1)
    ri = _check(recent_items, "recent_items", np.int32, 2)
    ud = _check(user_dirty, "user_dirty", np.uint8, 1)
    idt = _check(item_dirty, "item_dirty", np.uint8, 1)
    np_ = _check(noise_prob, "noise_prob", np.float32, 1)
    na = _check(noise_alias, "noise_alias", np.int32, 1)
    if np_.shape[0] != na.shape[0]:
        raise ValueError("noise_prob and noise_alias must have the same length")
    if not 0 <= negatives <= MAX_NEGATIVES:
        raise ValueError(f"negatives must be in [0, {MAX_NEGATIVES}], got {negatives}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    n_events = ur.shape[0]
    n_users = min(uv.shape[0], uc.shape[0], ri.shape[0], ud.shape[0])
    n_items = min(iv.shape[0], ic.shape[0], idt.shape[0])
    _check_rows(ur, "user_rows", n_users)
    _check_rows(ir, "item_rows", n_items)
    if np_.shape[0] > n_items:
        raise ValueError(f"the noise table covers {np_.shape[0]} rows, more than the "
                         f"{n_items} item rows")

    memset(&b, 0, sizeof(TrainBatch))
    b.user_vectors = <real_t *>uv.data
    b.item_vectors = <real_t *>iv.data
    b.dim = dim
    b.window = window
    b.item_input_vectors = NULL
    if window > 0:
        if item_input_vectors is None:
            raise ValueError("item_input_vectors is required when window > 0")
        wv = _check(item_input_vectors, "item_input_vectors", np.float32, 2)
        if wv.shape[1] != dim or wv.shape[0] < n_items:
            raise ValueError(
                f"item_input_vectors must have shape (>={n_items}, {dim}), got "
                f"{item_input_vectors.shape}")
        b.item_input_vectors = <real_t *>wv.data
    b.user_rows = <const int32_t *>ur.data
    b.item_rows = <const int32_t *>ir.data
    b.n_events = n_events
    b.user_cursor = <int64_t *>uc.data
    b.item_counts = <int64_t *>ic.data
    b.recent_items = <int32_t *>ri.data
    b.history_size = ri.shape[1]
    b.user_dirty = <uint8_t *>ud.data
    b.item_dirty = <uint8_t *>idt.data
    b.update_counts = update_counts
    b.total_count = total_count
    b.noise.prob = <const float *>np_.data
    b.noise.alias = <const int32_t *>na.data
    b.noise.n_rows = np_.shape[0]
    b.negatives = negatives
    b.sample = sample
    b.learning_rate = learning_rate
    b.learning_rate_step = learning_rate_step
    b.min_learning_rate = min_learning_rate
    b.l2 = l2
    b.exact_sigmoid = exact_sigmoid
    b.repeats = repeats
    b.use_blas = False if use_blas is None else bool(use_blas)
    b.seed = seed
    b.first_sequence = first_sequence

    # With fixed counts (offline passes) each item's keep probability is the
    # same for the whole batch: computed once per row, not once per event.
    cdef double[::1] keep
    cdef Py_ssize_t row
    b.keep_prob = NULL
    if not update_counts and sample > 0.0 and n_events > n_items:
        keep = np.empty(n_items, dtype=np.float64)
        for row in range(n_items):
            keep[row] = keep_probability(b.item_counts[row], total_count, sample)
        b.keep_prob = &keep[0]

    work = <real_t *>malloc(dim * sizeof(real_t))
    if work == NULL:
        raise MemoryError()
    try:
        with nogil:
            train_batch(&b, work)
    finally:
        free(work)
    return b.loss, b.trained_pairs, b.trained_events, b.total_count


def advance_history(user_rows, item_rows, user_cursor, recent_items):
    """Apply only the history bookkeeping of ``train_events`` to a run of events.

    Each event enters its user's ring of recent items and moves the user's
    cursor, exactly as training the events would, with no vector touched. A
    threaded fit uses it to give each thread the rings a sequential pass would
    have at the start of the thread's slice.
    """
    cdef cnp.ndarray ur, ir
    ur, ir = _check_events(user_rows, item_rows)
    cdef cnp.ndarray uc = _check(user_cursor, "user_cursor", np.int64, 1)
    cdef cnp.ndarray ri = _check(recent_items, "recent_items", np.int32, 2)
    cdef const int32_t *users = <const int32_t *>ur.data
    cdef const int32_t *items = <const int32_t *>ir.data
    cdef int64_t *cursor = <int64_t *>uc.data
    cdef int32_t *recent = <int32_t *>ri.data
    cdef int64_t e, n_events = ur.shape[0]
    cdef int history_size = ri.shape[1]
    _check_rows(ur, "user_rows", min(uc.shape[0], ri.shape[0]))
    with nogil:
        for e in range(n_events):
            push_history(recent, cursor, history_size, users[e], items[e])


def pair_update(target, item_vectors, int positive, negative_rows,
                double learning_rate, double l2=0.0, bint exact_sigmoid=True,
                bint use_blas=True):
    """Python twin of the nogil pair update, for tests against NumPy.

    Updates ``target`` (float32, shape (dim,)) and the rows ``positive`` and
    ``negative_rows`` (int32) of ``item_vectors`` in place; returns the loss.
    """
    cdef cnp.ndarray t = _check(target, "target", np.float32, 1)
    cdef cnp.ndarray iv = _check(item_vectors, "item_vectors", np.float32, 2)
    cdef cnp.ndarray neg = _check(negative_rows, "negative_rows", np.int32, 1)
    cdef real_t *work
    if t.shape[0] != iv.shape[1]:
        raise ValueError(f"target has dim {t.shape[0]}, item_vectors {iv.shape[1]}")
    rows = np.concatenate([[positive], neg])
    if rows.min() < 0 or rows.max() >= iv.shape[0]:
        raise ValueError(f"rows must be in [0, {iv.shape[0]})")
    work = <real_t *>malloc(t.shape[0] * sizeof(real_t))
    try:
        loss = sgns_pair_update(
            <real_t *>t.data, <real_t *>iv.data, t.shape[0], positive,
            <const int32_t *>neg.data, neg.shape[0], learning_rate, l2, exact_sigmoid,
            work, NULL, use_blas)
    finally:
        free(work)
    return loss


def draw_noise_rows(noise_prob, noise_alias, long long n, unsigned long long seed=0):
    """Python twin of the alias draw: ``n`` rows from one seeded stream."""
    cdef cnp.ndarray p = _check(noise_prob, "noise_prob", np.float32, 1)
    cdef cnp.ndarray a = _check(noise_alias, "noise_alias", np.int32, 1)
    cdef NoiseTable table
    cdef uint64_t state = seed
    cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(n, dtype=np.int32)
    cdef long long k
    if p.shape[0] == 0:
        raise ValueError("the noise table is empty")
    table.prob = <const float *>p.data
    table.alias = <const int32_t *>a.data
    table.n_rows = p.shape[0]
    with nogil:
        for k in range(n):
            out[k] = draw_noise(&table, &state)
    return out


def build_alias_table(weights):
    """Walker/Vose alias table for sampling rows with probability ~ ``weights``.

    Parameters
    ----------
    weights : float64 array (n,)
        Non-negative, finite; zero-weight rows are never drawn.

    Returns
    -------
    (prob, alias) : float32 array (n,), int32 array (n,)
    """
    cdef cnp.ndarray w = _check(np.array(weights, dtype=np.float64), "weights",
                                np.float64, 1)
    cdef Py_ssize_t n = w.shape[0], k, n_small = 0, n_large = 0, s, l
    cdef double total
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int32)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    cdef double[::1] scaled = w * (n / total)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] prob = np.zeros(n, dtype=np.float32)
    cdef cnp.ndarray[cnp.int32_t, ndim=1] alias = np.arange(n, dtype=np.int32)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] small = np.empty(n, dtype=np.int64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] large = np.empty(n, dtype=np.int64)
    with nogil:
        for k in range(n):
            if scaled[k] < 1.0:
                small[n_small] = k
                n_small += 1
            else:
                large[n_large] = k
                n_large += 1
        while n_small > 0 and n_large > 0:
            n_small -= 1
            s = small[n_small]
            l = large[n_large - 1]
            prob[s] = <float>scaled[s]
            alias[s] = <int32_t>l
            scaled[l] = scaled[l] + scaled[s] - 1.0
            if scaled[l] < 1.0:
                n_large -= 1
                small[n_small] = l
                n_small += 1
        # What is left is 1 up to rounding.
        for k in range(n_large):
            prob[large[k]] = 1.0
        for k in range(n_small):
            prob[small[k]] = 1.0 if scaled[small[k]] > 0 else 0.0
    # A zero-weight row left over by rounding must point at a drawable row.
    stuck = (prob == 0) & (alias == np.arange(n))
    if stuck.any():
        alias[stuck] = int(np.argmax(w))
    return prob, alias


def init_rows(table, long long start, long long stop, unsigned long long seed,
              double low, double high):
    """Fill rows [start, stop) of ``table`` uniformly in [low, high).

    Row r draws from its own stream of ``(seed, r)``, so a row's initial value
    does not depend on when or in which batch it was created.
    """
    cdef cnp.ndarray t = _check(table, "table", np.float32, 2)
    cdef long long r, c, dim = t.shape[1]
    cdef uint64_t state
    cdef float *data = <float *>t.data
    cdef double span = high - low
    if not 0 <= start <= stop <= t.shape[0]:
        raise ValueError(f"rows [{start}, {stop}) out of range for {t.shape[0]} rows")
    with nogil:
        for r in range(start, stop):
            state = event_stream(seed, r)
            for c in range(dim):
                data[r * dim + c] = <float>(low + span * uniform01(&state))
