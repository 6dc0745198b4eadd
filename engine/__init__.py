"""statelog engine: Burr-style applications whose every step is an event.

Build an app with ``ApplicationBuilder``, run it with ``astep`` / ``arun`` /
``aiterate`` / ``astream`` (or the sync twins ``step`` / ``run`` / ``iterate``).
Every step appends one event to the app's stream; state is the fold of them.
"""

from ._actions import (
    Action,
    BatchNode,
    FunctionAction,
    Node,
    StepOutcome,
    action,
    batch_action,
    run_action,
    run_action_sync,
)
from ._application import Application, StepResult
from ._builder import DEFAULT_DB, ApplicationBuilder, StreamPosition, load_position
from ._durability import Durability
from ._errors import (
    ActionError,
    AppExistsError,
    GraphChangedError,
    GraphChangedWarning,
    HookError,
    InputError,
    StateError,
    TransitionError,
)
from ._hooks import HookErrorPolicy, PostStepHook, PostStepHookAsync, PreStepHook, PreStepHookAsync
from ._input import validate as validate_input
from ._input import wait_for_input
from ._parallel import ParallelMap, parallel_map
from ._record import Secret
from ._state import Delta, State
from ._transitions import Condition, Graph, Transition, default, expr, on, when

__all__ = [
    "DEFAULT_DB",
    "Action",
    "ActionError",
    "AppExistsError",
    "Application",
    "ApplicationBuilder",
    "BatchNode",
    "Condition",
    "Delta",
    "Durability",
    "FunctionAction",
    "Graph",
    "GraphChangedError",
    "GraphChangedWarning",
    "HookError",
    "HookErrorPolicy",
    "InputError",
    "Node",
    "ParallelMap",
    "PostStepHook",
    "PostStepHookAsync",
    "PreStepHook",
    "PreStepHookAsync",
    "Secret",
    "State",
    "StateError",
    "StepOutcome",
    "StepResult",
    "StreamPosition",
    "Transition",
    "TransitionError",
    "action",
    "batch_action",
    "default",
    "expr",
    "load_position",
    "on",
    "parallel_map",
    "run_action",
    "run_action_sync",
    "validate_input",
    "wait_for_input",
    "when",
]
