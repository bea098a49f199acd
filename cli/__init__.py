"""The ``airfleet`` command: validate, run (fleet simulation or study), report, bench.

It sits above both ends of the link: it starts the Flower simulation with the server's
and the devices' apps, and runs studies in-process.
"""
