# For a standalone cluster: make executors run the same Python as the driver.
# export PYSPARK_PYTHON=/opt/venvs/deepdist/bin/python
# export SPARK_LOCAL_IP=<this host's address reachable by the other nodes>
