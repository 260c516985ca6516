# Sourced by install_micropython.sh and build_firmware.sh: a private apt configuration for
# Debian trixie in a folder of our own, so the system's apt sources are never touched.
#   trixie_apt DIR deb|deb-src   sets up DIR, and the array apt_opts for apt-get and the
#                                variable trixie_mirror; returns 1 (with a message) if no
#                                Debian mirror is configured on this machine.

trixie_apt() {
    local aptdir=$1 type=$2 mirror=${SMTP_DUO_DEBIAN_MIRROR:-}
    # The mirror this machine already uses (SMTP_DUO_DEBIAN_MIRROR overrides it).
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
        mirror=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
        # "deb [options] URI suite ...": the URI is the first field after the type with "://"
        mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    if [ -z "$mirror" ]; then
        echo "no Debian mirror found in the apt sources; set SMTP_DUO_DEBIAN_MIRROR" >&2
        return 1
    fi
    trixie_mirror=${mirror%/}

    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial" "$aptdir/cache"
    : >"$aptdir/status" # an empty dpkg status: what the host has installed does not matter here
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    if [ -r "$keyring" ]; then
        echo "$type [signed-by=$keyring] $trixie_mirror trixie main" >"$aptdir/sources.list"
    else
        echo "$type $trixie_mirror trixie main" >"$aptdir/sources.list"
    fi
    apt_opts=(
        -o "Dir::Etc::SourceList=$aptdir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=/dev/null"
        -o "Dir::State::Lists=$aptdir/lists"
        -o "Dir::State::status=$aptdir/status"
        -o "Dir::Cache=$aptdir/cache"
        -o "Dir::Cache::Archives=$aptdir/archives"
        -o "Acquire::Check-Valid-Until=false"
        -o "Acquire::Check-Date=false"
        -o "Acquire::Languages=none"
        -o "APT::Architecture=amd64"
        -o "APT::Architectures=amd64"
        -q
    )
    if [ "$(id -u)" = 0 ]; then
        apt_opts+=(-o "APT::Sandbox::User=root") # the private folders are not writable by '_apt'
    fi
}
