"""fleetd: the reference bare-metal fleet daemon behind the fleet API.

Two halves. The daemon (``daemon``, ``api``, ``store``, ``placement``, ``ipam``,
``network``, ``cgroups``, ``supervisor``) places microVMs, keeps their records in
SQLite and serves the API. Each microVM is run by a *shim* (``shim``, ``sandbox``,
``crilog``, ``runtimes``): a small process of its own, so microVMs survive a daemon
restart and are re-adopted. The shim half imports only the standard library, to start
fast and stay small.
"""
