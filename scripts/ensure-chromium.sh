#!/bin/sh
# Debian's chromium for the dashboard's browser test and screenshots (`make chromium`), installed
# when missing and this user may install packages; otherwise that test skips, saying why.
command -v chromium >/dev/null 2>&1 && exit 0
command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the dashboard's browser test"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }) \
        || echo "could not install chromium; the browser test will skip"
else
    echo "chromium is not installed (sudo apt-get install chromium); the browser test will skip"
fi
exit 0
