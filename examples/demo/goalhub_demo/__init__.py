"""The live-streaming platform's flows on goalhub, outside the core.

- ``python -m goalhub_demo`` (``make demo``): the seeds' two flows end to end
  (``goalhub_demo.demo``);
- ``goalhub_demo.world``: the platform's goal classes and documents that the bundled
  plugins' receiver tests share.

The core names no plugin, goal class or plugin field; this distribution does, because it
drives the bundled plugins the way the platform does.
"""
