"""What each built-in job kind does, one module per kind: ``train``, ``retrain``, ``adapt-history`` (the
retrain policy over the check history) and ``monitor``. They are registered by import path in
``zeal_core.jobs.kinds.BUILT_IN_KINDS`` and imported by the worker when a job of the kind runs."""
