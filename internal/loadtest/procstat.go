package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuSample is a process's CPU time so far.
type cpuSample struct {
	at    time.Time
	ticks int64         // utime + stime from /proc/<pid>/stat
	sched time.Duration // sum of /proc/<pid>/task/*/schedstat, nanosecond exact
}

func readCPU(pid int) (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name may hold spaces; the fields after it do not.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	s.ticks = utime + stime

	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			s.sched += time.Duration(ns)
		}
	}
	return s, nil
}

// cpuUse is the CPU a process used between two samples, in percent of one
// core: by the tick counters and by the scheduler's nanosecond counters.
type cpuUse struct {
	Ticks float64 `json:"ticksPercent"`
	Sched float64 `json:"schedPercent"`
}

func cpuBetween(a, b cpuSample) cpuUse {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return cpuUse{}
	}
	return cpuUse{
		Ticks: 100 * (time.Duration(b.ticks-a.ticks) * clockTick).Seconds() / wall,
		Sched: 100 * (b.sched - a.sched).Seconds() / wall,
	}
}

// readRSS returns a process's resident memory (VmRSS) in bytes.
func readRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// machine describes the computer the benchmark ran on.
type machine struct {
	CPUs    int    `json:"cpus"`
	Model   string `json:"model"`
	MemMiB  int64  `json:"memMiB"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Node    string `json:"node,omitempty"`
	Started string `json:"started"`
}

func readMachine() machine {
	m := machine{Started: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				m.CPUs++
			case "model name":
				m.Model = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemMiB = kb >> 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// machineCPU is the whole machine's CPU time so far, from /proc/stat.
type machineCPU struct {
	busy, total int64 // ticks
}

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var m machineCPU
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		m.total += n
		if i != 3 && i != 4 { // idle, iowait
			m.busy += n
		}
	}
	return m
}

// busyBetween is the machine's busy time between two readings, in percent
// of one core.
func busyBetween(a, b machineCPU, cpus int) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * float64(cpus) * float64(b.busy-a.busy) / float64(b.total-a.total)
}
