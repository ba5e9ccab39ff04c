#!/bin/sh
# Check GPU isolation on a host with real NVIDIA GPUs, the way gpucloud sets it up.
#
#   sudo scripts/check-gpu-isolation.sh
#
# As root it prepares the host as bootstrap does (a group per GPU owning /dev/nvidiaN, mode
# 0660; the modprobe option NVreg_ModifyDeviceFiles=0), makes one allocation-like user in GPU
# 0's group only, and reports which /dev/nvidia* that user can open and what `nvidia-smi -L`
# shows it. Then it puts everything back: the user and groups are deleted, each device gets its
# owner and mode again, and the modprobe file goes unless it was there before.
#
# Expected: the user opens /dev/nvidia0 and no other /dev/nvidiaN (nvidiactl, nvidia-uvm and
# nvidia-caps are shared by every CUDA process and stay as the driver made them); nvidia-smi
# lists GPU 0 only. Exit 0 when so, 1 when not, 2 when the check could not run.
#
# Environment (tests point these at stand-ins): GPUCLOUD_CHECK_DEVICE_DIR (/dev),
# GPUCLOUD_CHECK_PREFIX (gpuchk: groups <prefix>gpuN, user <prefix>user),
# GPUCLOUD_CHECK_MODPROBE (/etc/modprobe.d/gpucloud-nvidia.conf), NVIDIA_SMI (nvidia-smi).
set -eu

dev_dir=${GPUCLOUD_CHECK_DEVICE_DIR:-/dev}
prefix=${GPUCLOUD_CHECK_PREFIX:-gpuchk}
modprobe_file=${GPUCLOUD_CHECK_MODPROBE:-/etc/modprobe.d/gpucloud-nvidia.conf}
nvidia_smi=${NVIDIA_SMI:-nvidia-smi}
user="${prefix}user"
option="options nvidia NVreg_ModifyDeviceFiles=0"

die() { echo "check-gpu-isolation: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (it makes groups, a user and changes device owners)"
if getent passwd "$user" >/dev/null; then die "user $user exists already; pick GPUCLOUD_CHECK_PREFIX"; fi

# The GPU devices: nvidia followed by digits only.
gpus=""
for device in "$dev_dir"/nvidia[0-9]*; do
  index=${device#"$dev_dir"/nvidia}
  case "$index" in ''|*[!0-9]*) continue ;; esac
  gpus="$gpus $index"
done
[ -n "$gpus" ] || die "no GPU devices under $dev_dir (is the NVIDIA driver loaded?)"

# What to put back.
saved=""
made_groups=""
wrote_modprobe=0
restore() {
  status=$?
  set +e
  userdel "$user" >/dev/null 2>&1
  for entry in $saved; do  # index:uid:gid:mode
    index=${entry%%:*}; rest=${entry#*:}
    chown "${rest%:*}" "$dev_dir/nvidia$index" && chmod "${rest##*:}" "$dev_dir/nvidia$index"
  done
  for group in $made_groups; do groupdel "$group" >/dev/null 2>&1; done
  [ "$wrote_modprobe" = 0 ] || rm -f "$modprobe_file"
  echo "cleaned up: user $user and groups removed, device owners and modes restored"
  exit "$status"
}
trap restore EXIT
trap 'exit 2' INT TERM HUP

echo "== preparing as bootstrap does"
for index in $gpus; do
  device="$dev_dir/nvidia$index"
  saved="$saved $index:$(stat -c '%u:%g:%a' "$device")"
  group="${prefix}gpu$index"
  if ! getent group "$group" >/dev/null; then
    groupadd -r "$group"
    made_groups="$made_groups $group"
  fi
  chgrp "$group" "$device"
  chmod 0660 "$device"
  echo "$device: group $group, mode 0660"
done
if [ -e "$modprobe_file" ]; then
  echo "$modprobe_file exists: $(grep -h 'NVreg_ModifyDeviceFiles' "$modprobe_file" || echo 'without NVreg_ModifyDeviceFiles')"
else
  printf '# Written by check-gpu-isolation.sh; removed when it ends.\n%s\n' "$option" >"$modprobe_file"
  wrote_modprobe=1
  echo "$modprobe_file: written ($option)"
fi
params=/proc/driver/nvidia/params
if [ -r "$params" ]; then
  echo "loaded driver: $(grep -h '^ModifyDeviceFiles' "$params" || echo 'ModifyDeviceFiles not reported')"
  echo "  (1: the driver may reset device modes on its next load; 0: it leaves them alone)"
else
  echo "loaded driver: $params not readable (is the NVIDIA driver loaded?)"
fi

echo "== one allocation user in GPU 0's group only"
first=${gpus# }; first=${first%% *}
useradd -M -s /bin/sh -G "${prefix}gpu$first" "$user"
echo "$user: $(id "$user")"

as_user() {  # COMMAND [ARG...]: run as the user, with no root capability left
  if command -v runuser >/dev/null; then runuser -u "$user" -- "$@"
  else su -s /bin/sh "$user" -c '"$@"' sh "$@"; fi
}

echo "== devices the user can open for reading"
wrong=0
for device in "$dev_dir"/nvidia*; do
  [ -e "$device" ] || continue
  if as_user sh -c 'true <"$1"' sh "$device" 2>/dev/null; then result=opens; else result=refused; fi
  index=${device#"$dev_dir"/nvidia}
  case "$index" in
    ''|*[!0-9]*) note="shared" ;;
    "$first") note="its own GPU"; [ "$result" = opens ] || wrong=1 ;;
    *) note="another GPU"; [ "$result" = refused ] || wrong=1 ;;
  esac
  echo "$device: $result ($note)"
done

echo "== $nvidia_smi -L as $user"
as_user "$nvidia_smi" -L 2>&1 || echo "(nvidia-smi exited $?)"

if [ "$wrong" = 0 ]; then
  echo "RESULT: PASS: $user opens its own GPU ($dev_dir/nvidia$first) and no other"
else
  echo "RESULT: FAIL: $user's access differs from its own GPU only"
  exit 1
fi
