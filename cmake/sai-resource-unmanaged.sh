#!/bin/sh
# Stands in for sai-resource when SaiResource.cmake could not find it at
# configure time.  It takes sai-resource's arguments and decides at test time:
# outside a Sai farm (SAI_BUILDER_RESOURCE_PROXY unset or empty) it is a no-op
# that passes, or, in launcher form (... -- CMD ARGS), it becomes CMD by exec,
# so CMD keeps the stdio, the exit status and the signals.  Inside a farm it
# fails loudly: gating that silently does nothing is what this module is for
# preventing.
if [ -n "${SAI_BUILDER_RESOURCE_PROXY:-}" ]; then
  echo "sai-resource: SAI_BUILDER_RESOURCE_PROXY is set but sai-resource was not found when this project was configured; install it or set SAI_RESOURCE_COMMAND and reconfigure" >&2
  exit 1
fi
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
if [ $# -eq 0 ]; then exit 0; fi
shift
if [ $# -eq 0 ]; then
  echo "sai-resource: no command after --" >&2
  exit 2
fi
exec "$@"
