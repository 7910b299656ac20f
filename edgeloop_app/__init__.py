"""The application layer: the `edgeloop` command line (`cli`) and `edgeloop run`, the
whole loop on one machine (`demo`).

It sits on top of everything and may import any package. The command line names its
subcommands as module paths and imports one only when it runs, so an edge install
(contracts, inference, streams) runs `edgeloop detect` without the agent or the lab.
"""
