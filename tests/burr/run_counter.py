"""Run Burr's counter example (counter_app.py) to its end, a little slowly.

    python run_counter.py APP_ID COUNT_UP_TO STORAGE_DIR

Run in the directory that holds (or will hold) ``demos.db``. Each step sleeps
in a post-run-step hook (passed through the example's own ``hooks``
parameter), so a test can kill the process mid-run. Prints the example's
"counted to N" lines, then ``final <state as JSON>``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from burr.lifecycle import PostRunStepHook
from counter_app import application

PAUSE = 0.05


class Pause(PostRunStepHook):  # type: ignore[misc]
    def post_run_step(self, **future_kwargs: Any) -> None:
        time.sleep(PAUSE)


def main() -> None:
    app_id, count_up_to, storage_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = application(
        count_up_to=count_up_to, app_id=app_id, storage_dir=storage_dir, hooks=[Pause()]
    )
    _, _, state = app.run(halt_after=["result"])
    print("final", json.dumps(state.serialize(), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
