"""edge-agent's test and demo harness: kept out of the runtime wheel a Pi installs.

`farm` (fake origins), `fleet` (hosts in network namespaces, nftables faults),
`demo` and `fleet_demo` (what `edge-agent demo` runs from a clone). It is a second
distribution in the repository (harness/pyproject.toml), installed editable into the
dev venv by scripts/bootstrap.sh; the image and Ansible install the runtime wheel only.
"""
