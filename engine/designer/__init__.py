"""The flow designer's server side: YAML ⇄ graph JSON, problems on nodes and edges, changes, dry runs.

YAML stays the source of truth. ``graph.to_graph`` reads a flow with the loader of record
(PyYAML, positions kept) and turns it into LogicFlow's graph data; ``writer.to_yaml`` writes a
graph back into the YAML it was opened from with ruamel.yaml in round-trip mode, so comments,
key order, quoting and unknown keys survive. Every written text is validated again by the
loader of record, exactly as ``careflow validate`` does. ``dry_run`` tries a flow out.
"""
