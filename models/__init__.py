"""Model recipes (architectures, training, data synthesis) and the shipped default artifacts.

Workstation side: these modules import TensorFlow / Keras. The board never imports them.
"""


def process_pool(jobs: int):
    """A pool of ``jobs`` worker processes for the recipes' parallel work (TTS, features).

    Workers start from a clean server process ("forkserver"), never as forks of this one:
    a fork of a process that already runs threads (TensorFlow, BLAS, a test session) can
    leave a worker blocked for ever on a lock another thread held at the moment of the fork.
    Worker functions must be importable module-level functions.
    """
    import multiprocessing

    return multiprocessing.get_context("forkserver").Pool(jobs)
