"""`python -m functions.local_worker`: the GPU class's code in a local process of its own.

The web tier (`sdgate serve --worker external`) and this process share nothing in memory: only
the state store (SDGATE_STATE_DB), as a Modal web container and a GPU container share only the
Dict and Queue (plus the weights folder and the result storage, as the volume and the bucket).
Jobs and generation calls arrive on the store's queue and run through `Generator`'s methods
with Modal's `.local()`, enter hooks included.
"""

import logging
import warnings

from functions.generator import Generator
from shared import worker


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=r".* is executing locally and will not have access",
                            category=UserWarning)
    gen = Generator()
    gen.loaded.local()  # enter hooks: load, start (binds progress to the state store)
    methods = {"generate": gen.generate.local, "op": gen.op.local, "memory": gen.memory.local}
    print("sdgate worker: ready", flush=True)
    worker.serve(gen.state, methods, gen.run_job.local)


if __name__ == "__main__":
    main()
