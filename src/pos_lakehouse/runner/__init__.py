"""Running the code location with Dagster's own services on this machine, for the CLI.

`pos-lakehouse run`/`demo` start the real daemon (which starts the code server, and through the
instance's run launcher, a worker per run) on the project's instance, watch the instance's records
until everything is settled, and stop it; `pos-lakehouse dev` runs `dg dev`. Either way the child
processes live in their own process group, so a stop (Ctrl-C, SIGTERM) reaches all of them.
"""
