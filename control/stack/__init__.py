"""The native stack: Kafka, Apicurio Registry, Kafka Connect and FerretDB as local processes, and their supervisor.

One module a concern, each importing only those above it in this list:
- `probes`: is a process alive, does a port answer, is a component ready in its own protocol;
- `installation`: the Java artifacts through Maven (pom.xml here) and FerretDB through Go, each only when out of date;
- `supervision`: the files the supervisor and the control plane share (its report, an operator's holds);
- `components`: the component table (command lines, environments, config templates here, ports, probes);
- `processes`: start, stop, hold and release, what runs where and its memory, the logs.

Nothing is installed by hand; everything the stack produces (artifacts, data, logs, pid files) lives under one
state folder (`.state/`, ignored).
"""
