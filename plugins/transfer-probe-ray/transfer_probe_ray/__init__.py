"""transfer-probe-ray: the ``ray`` executor, registered through the ``transfer_probe`` entry points.

Importing this module is cheap: it registers an import path, and Ray is imported only when the
executor is first used (``get_executor("ray")``).
"""

from transfer_probe import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_executors(register):
    register("ray", "transfer_probe_ray.executor:RayExecutor")
