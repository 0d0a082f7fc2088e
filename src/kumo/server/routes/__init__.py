"""The API's routes, one router per resource: ``health``, ``hosts``, ``vms``,
``migrations`` (and the cluster's migration settings, and task cancel), ``resources``
(pools, networks, images) and ``activity`` (tasks, events). ``common`` holds what they
share; ``kumo.server.app`` assembles them."""
