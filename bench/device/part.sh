#!/bin/bash
# Device: keep the parts carried in folder $1 (e.g. .device/p2) for a later call.
mkdir -p /root/w/parts && cp -f "$1"/* /root/w/parts/ && ls /root/w/parts | tr '\n' ' '
tail -c 200 /root/w/build.log 2>/dev/null; echo
