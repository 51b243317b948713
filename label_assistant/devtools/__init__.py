"""Developer tools, kept apart from the product's core: nothing in the service imports them.

- :mod:`.demo`: ``make demo`` (a real Label Studio with the backend connected, on sample images);
- :mod:`.walkthrough`: ``make walkthrough`` (the workflow with the command line alone);
- :mod:`.samples`: generated sample images with their true masks (demo, tests, benchmarks);
- :mod:`.labelstudio_server`: start a local Label Studio server for the demo and the tests;
- :mod:`.redis_server`: start a local Redis for the RQ tests and benchmarks (``LA_QUEUE``).
"""
