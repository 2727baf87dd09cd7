#!/bin/sh
# The public image's tool of this name (compose's health check calls it).
exec java -Xmx128m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml \
  -cp '/opt/kafka/libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
