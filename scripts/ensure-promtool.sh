#!/bin/sh
# Debian's prometheus package for `promtool check rules` on deploy/prometheus/ (`make promtool`),
# installed when missing and this user may install packages; otherwise `make test` skips the
# check, saying why. Only promtool is used: the package's own prometheus service is not started
# here (policy-rc.d refuses service starts during the install where it can be set).
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's prometheus package for promtool (the alert rules' check)"
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1; fi
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }) \
        || echo "could not install prometheus; promtool's check of deploy/prometheus/ will skip"
    [ -n "$made_policy" ] && rm -f "$policy"
else
    echo "promtool is not installed (sudo apt-get install prometheus); the check of deploy/prometheus/ will skip"
fi
exit 0
