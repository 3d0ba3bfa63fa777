#!/usr/bin/env bash
# Describe N emulated arm64 cores of one kind to the runtimes in ROOT: a sysfs CPU tree (topology,
# caches, MIDR) under ROOT/sys and a /proc/cpuinfo text written to CPUINFO (bind-mounted over the
# root's /proc/cpuinfo by check.sh).
# Why: qemu-user passes the host's x86 /proc/cpuinfo through and the chroot has no sysfs. Without a
# CPU tree OpenVINO's TBB/hwloc segfaults in compile_model; ONNX Runtime's cpuinfo, given sysfs with
# an x86 /proc/cpuinfo (or the host's /sys), segfaults at import. Consistent arm64 ones work for both.
#   bash tools/arm64/fake_cpu.sh ROOT CPUINFO N KIND     KIND: cortex-a76 | cortex-a57 | max (QEMU_CPU)
set -euo pipefail
root=$1 cpuinfo=$2 n=${3:-2} kind=${4:-cortex-a76}
base="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
case $kind in  # MIDR variant/part/revision and the HWCAPs qemu's model of that core reports
  cortex-a57) variant=0x1 part=0xd07 rev=1 features="$base" ;;
  cortex-a76) variant=0x4 part=0xd0b rev=1 features="$base atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" ;;
  max) variant=0x1 part=0xd40 rev=1  # presented as a Neoverse V1 (Graviton3): SVE, I8MM, BF16
       features="$base atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp sha3 sm3 sm4 asimdfhm sve i8mm bf16 svei8mm svebf16 sve2" ;;
  *) echo "unknown CPU kind $kind (cortex-a76, cortex-a57, max)" >&2; exit 2 ;;
esac
midr=$(printf '0x00000000%02x%x%x%03x%x' 0x41 $((variant)) 15 $((part)) $((rev)))
cpu=$root/sys/devices/system/cpu
rm -rf "$root/sys/devices" "$root/sys/bus" && mkdir -p "$cpu" "$root/sys/bus/cpu"
last=$((n - 1))
all=$(printf '%x' $(((1 << n) - 1)))
for f in possible present online; do echo "0-$last" >"$cpu/$f"; done
: >"$cpuinfo"
for i in $(seq 0 $last); do
  d=$cpu/cpu$i; mine=$(printf '%x' $((1 << i)))
  mkdir -p "$d/topology" "$d/regs/identification"
  echo 1 >"$d/online"
  echo "$i" >"$d/topology/core_id"; echo 0 >"$d/topology/physical_package_id"; echo 0 >"$d/topology/cluster_id"
  for k in core_cpus thread_siblings; do echo "$mine" >"$d/topology/$k"; echo "$i" >"$d/topology/${k}_list"; done
  for k in package_cpus core_siblings cluster_cpus; do echo "$all" >"$d/topology/$k"; echo "0-$last" >"$d/topology/${k}_list"; done
  echo "$midr" >"$d/regs/identification/midr_el1"
  j=0  # L1d 64K, L1i 64K, L2 512K per core, L3 2M shared
  for spec in "1 Data 64K 4 256 $mine $i" "1 Instruction 64K 4 256 $mine $i" "2 Unified 512K 8 1024 $mine $i" \
              "3 Unified 2048K 16 2048 $all 0-$last"; do
    set -- $spec; c=$d/cache/index$j; mkdir -p "$c"
    echo "$1" >"$c/level"; echo "$2" >"$c/type"; echo "$3" >"$c/size"; echo 64 >"$c/coherency_line_size"
    echo "$4" >"$c/ways_of_associativity"; echo "$5" >"$c/number_of_sets"; echo "$6" >"$c/shared_cpu_map"
    echo "$7" >"$c/shared_cpu_list"; j=$((j + 1))
  done
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
    "$i" "$features" "$variant" "$part" "$rev" >>"$cpuinfo"
done
ln -s ../../devices/system/cpu "$root/sys/bus/cpu/devices"
