"""Entry points of i2v-stream: the command line, the daemon and the query service.

Only this package configures logging handlers and signal handling; the library
in ``i2v_stream`` only emits log records.
"""
