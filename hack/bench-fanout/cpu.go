package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time (user and system) each process of the benchmark has used so far,
// by name: this process (the bare client and every contender's pod watch) and the components
// it started (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, manager).
// On a machine with few cores they all share the CPUs, so the time one uses is time the API
// server does not get.
type cpuSample map[string]time.Duration

// sampleCPU reads /proc for this process and its children.
func sampleCPU() cpuSample {
	self := os.Getpid()
	s := cpuSample{}
	if name, _, used, ok := procCPU(self); ok {
		s[name+" (bench)"] = used
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return s
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if name, ppid, used, ok := procCPU(pid); ok && ppid == self {
			s[name] += used
		}
	}
	return s
}

// procCPU reads a process's name, parent and CPU time from /proc/PID/stat.
func procCPU(pid int) (name string, ppid int, used time.Duration, ok bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, 0, false
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return "", 0, 0, false
	}
	// The name is in parentheses and may hold spaces: the fields follow the last ')'.
	line := string(data)
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return "", 0, 0, false
	}
	name = line[open+1 : end]
	fields := strings.Fields(line[end+1:])
	// fields[0] is field 3 of proc(5): state; ppid is field 4, utime 14, stime 15.
	if len(fields) < 13 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return name, ppid, time.Duration(utime+stime) * clockTick, true
}

// since returns the CPU time each process used between an earlier sample and this one.
func (s cpuSample) since(before cpuSample) cpuSample {
	d := cpuSample{}
	for name, used := range s {
		d[name] = used - before[name]
	}
	return d
}

// printCPU prints, for each contender, the CPU seconds each process used while its pods were
// created, and how many CPU seconds the machine had in that time.
func printCPU(w io.Writer, results []result) {
	names := map[string]bool{}
	for _, r := range results {
		for name := range r.cpu {
			names[name] = true
		}
	}
	rows := make([]string, 0, len(names))
	for name := range names {
		rows = append(rows, name)
	}
	slices.Sort(rows)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "CPU seconds while the pods were created")
	for _, r := range results {
		fmt.Fprintf(tw, "\t%s", r.name)
	}
	fmt.Fprintln(tw)
	for _, name := range rows {
		fmt.Fprint(tw, name)
		for _, r := range results {
			fmt.Fprintf(tw, "\t%.1f", r.cpu[name].Seconds())
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "all (of %d CPUs x the time)", runtime.NumCPU())
	for _, r := range results {
		var all time.Duration
		for _, used := range r.cpu {
			all += used
		}
		fmt.Fprintf(tw, "\t%.1f of %.1f", all.Seconds(), float64(runtime.NumCPU())*r.created.Seconds())
	}
	fmt.Fprintln(tw)
	_ = tw.Flush()
}
