"""The benchmarker: latency, throughput, memory and accuracy of artifacts in their own runtimes.

``measure`` and ``device`` depend only on the standard library, numpy and a runtime, because they are
what runs on a remote device; ``benchmark`` (the host side), ``remote`` and ``report`` use the rest.
"""
