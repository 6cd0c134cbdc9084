"""``python -m zeal_core.jobs worker``: the job worker process (started by ``JobQueue.ensure_worker``)."""

import sys

from zeal_core.jobs.worker import main

sys.exit(main())
