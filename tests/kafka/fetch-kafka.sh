#!/usr/bin/env bash
# Puts a runnable Apache Kafka (jars only) into a cache folder outside git and prints that folder's path on
# stdout, which is all the test harness reads. Everything else goes to stderr.
#
#   tests/kafka/fetch-kafka.sh            # -> ~/.cache/edgestream/kafka-4.4.0/libs
#
# Environment:
#   EDGESTREAM_KAFKA_VERSION  Kafka release to resolve from Maven Central (default below).
#   EDGESTREAM_KAFKA_LIBS     folder to fill (default ~/.cache/edgestream/kafka-<version>/libs). A folder that
#                             already holds kafka_2.13-*.jar but no stamp is taken as managed by hand: it is
#                             used as it is, never replaced.
#
# Idempotent: a folder whose stamp names this version and this pom.xml is left alone (no Maven run). The jars
# are copied into a temporary sibling folder and renamed into place only when complete, so an interrupted run
# never leaves a half-filled folder behind that looks usable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=${EDGESTREAM_KAFKA_VERSION:-4.4.0}
libs=${EDGESTREAM_KAFKA_LIBS:-${HOME}/.cache/edgestream/kafka-${version}/libs}
stamp_file="$libs/.complete"
stamp="version=${version} pom=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"

if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  echo "$libs"
  exit 0
fi
if [ -d "$libs" ] && [ ! -f "$stamp_file" ] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "fetch-kafka: using hand-managed $libs as it is" >&2
  echo "$libs"
  exit 0
fi
if [ -d "$libs" ] && [ ! -f "$stamp_file" ] && [ -n "$(ls -A "$libs")" ]; then
  echo "fetch-kafka: $libs is not empty and holds no Kafka; point EDGESTREAM_KAFKA_LIBS elsewhere" >&2
  exit 1
fi

for tool in mvn java; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-kafka: '$tool' not found; install Debian packages maven and openjdk-17-jre-headless" >&2
    exit 1
  fi
done

parent=$(dirname "$libs")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.libs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-kafka: resolving Apache Kafka ${version} from Maven Central into $libs" >&2
started=$(date +%s)
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" \
  -Dkafka.version="$version" \
  -DincludeScope=runtime \
  -DoutputDirectory="$tmp" \
  dependency:copy-dependencies 2>&1 |
  sed -e $'s/\x1b\\[[0-9;]*m//g' >&2 # Debian's Maven prints colour resets even in batch mode
if [ ! -f "$tmp/kafka_2.13-${version}.jar" ]; then
  echo "fetch-kafka: Maven finished but kafka_2.13-${version}.jar is missing from the copy" >&2
  exit 1
fi
echo "$stamp" >"$tmp/.complete"

rm -rf "$libs"
if ! mv -T "$tmp" "$libs" 2>/dev/null; then
  # Another run finished first; its copy is as good as ours.
  if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    echo "fetch-kafka: could not move the jars into $libs" >&2
    exit 1
  fi
fi
echo "fetch-kafka: $(ls "$libs" | wc -l) jars in $(( $(date +%s) - started )) s" >&2
echo "$libs"
