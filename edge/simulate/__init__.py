"""Simulated factory devices for demos, tests and benchmarks: MQTT sensors, serial devices, a Modbus RTU unit."""
