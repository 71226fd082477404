"""PLC drivers: OPC UA (asyncua) and Modbus TCP (pymodbus), register codecs, an in-memory fake."""
