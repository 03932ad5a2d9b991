"""Benchmarks run by ``python -m centernet_jax.bench``, one module per benchmark.

``registry`` holds the name -> function table and the table formatting, ``timing`` the
shared measuring helpers; ``dcn`` and ``models`` register themselves on import.
"""
