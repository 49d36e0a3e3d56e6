# NodeTask wrapper: runs the task's script on the host and reports its result to Kubernetes.
# It makes the pod's exit code the script's own and writes the tail of the script's output
# to the container's termination message, so that the result and output of successful runs
# reach the NodeTask's status too (Kubernetes reads logs only for failed containers).
#
# With spec.check, NODETASK_MODE says what runs, each step a process of its own:
#   Check     the check alone (mode Audit, and the check before a node is claimed)
#   CheckFix  the check; if it exits NODETASK_NONCOMPLIANT_EXIT_CODE, the script (the fix);
#             if the fix exits with one of NODETASK_SUCCESS_EXIT_CODES, the check again
# Each step that ran leaves a line "nodetask: <step> exit code N" before the completion marker;
# the operator judges the node from those lines (controllers/rollout/results.go), not from the
# pod's exit code, which only has to be non-zero when the node failed or must restart.
#
# Scripts are run with -File, never -Command: on nodes where hcsshim uses the bind filter
# (Windows Server 2022 and later with containerd 1.7+) the container's command line goes
# through `cmd /c`, which breaks multi-line commands and interprets & | > %.
$ErrorActionPreference = 'Continue'
$maxOutputBytes = 4000
$maxLines = 200

# Windows PowerShell decodes a child's piped output with the console's output encoding, the
# OEM code page: make it UTF-8, so that non-ASCII output survives into the log and status.
try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding($false) } catch { }

$dir = Join-Path $env:CONTAINER_SANDBOX_MOUNT_POINT 'nodetask'

# Invoke-Step runs one file with its interpreter, passes every line on to the pod's log, and
# returns the step's exit code and the last lines of its output.
function Invoke-Step([string]$step, [string]$interpreter, [string]$base) {
    switch ($interpreter) {
        'Cmd'  { $exe = 'cmd.exe';        $argv = @('/d', '/c', (Join-Path $dir "$base.cmd")) }
        'Pwsh' { $exe = 'pwsh.exe';       $argv = @('-NoLogo', '-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', (Join-Path $dir "$base.ps1")) }
        default { $exe = 'powershell.exe'; $argv = @('-NoLogo', '-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', (Join-Path $dir "$base.ps1")) }
    }
    $env:NODETASK_STEP = $step
    # Keep the last lines in memory while passing every line on to the pod's log.
    $tail = New-Object 'System.Collections.Generic.Queue[string]'
    $code = 1
    try {
        & $exe @argv 2>&1 | ForEach-Object {
            $line = "$_"
            Write-Host $line
            $tail.Enqueue($line)
            while ($tail.Count -gt $maxLines) { [void]$tail.Dequeue() }
        }
        $code = $LASTEXITCODE
        if ($null -eq $code) { $code = 1 }
    } catch {
        $msg = "nodetask: could not start ${exe}: $($_.Exception.Message)"
        Write-Host $msg
        $tail.Enqueue($msg)
    }
    return @{ Code = [int]$code; Text = ($tail.ToArray() -join "`n") }
}

# Tail-Bytes keeps the last $n bytes of a text, as UTF-8.
function Tail-Bytes([string]$text, [int]$n) {
    $bytes = [System.Text.Encoding]::UTF8.GetBytes($text)
    if ($bytes.Length -le $n) { return $text }
    return [System.Text.Encoding]::UTF8.GetString($bytes, $bytes.Length - $n, $n)
}

$steps = @()
switch ($env:NODETASK_MODE) {
    'Check' {
        $r = Invoke-Step 'check' $env:NODETASK_CHECK_INTERPRETER 'check'
        $steps += @{ Name = 'check'; Result = $r }
        $code = $r.Code
        # Compliant and non-compliant are both answers: only a check that failed fails the pod.
        if ($code -eq [int]$env:NODETASK_NONCOMPLIANT_EXIT_CODE) { $code = 0 }
    }
    'CheckFix' {
        $r = Invoke-Step 'check' $env:NODETASK_CHECK_INTERPRETER 'check'
        $steps += @{ Name = 'check'; Result = $r }
        $code = $r.Code
        if ($code -eq [int]$env:NODETASK_NONCOMPLIANT_EXIT_CODE) {
            $fix = Invoke-Step 'fix' $env:NODETASK_INTERPRETER 'script'
            $steps += @{ Name = 'fix'; Result = $fix }
            $code = $fix.Code
            $ok = @($env:NODETASK_SUCCESS_EXIT_CODES -split ',' | ForEach-Object { [int]$_ })
            if ($ok -contains $fix.Code) {
                $re = Invoke-Step 'recheck' $env:NODETASK_CHECK_INTERPRETER 'check'
                $steps += @{ Name = 'recheck'; Result = $re }
                # Remediated: the fix's own code (0, or 3010 for a restart); otherwise the
                # re-check's code, never 0.
                if ($re.Code -ne 0) { $code = $re.Code }
            }
        }
    }
    default {
        $r = Invoke-Step 'run' $env:NODETASK_INTERPRETER 'script'
        $steps += @{ Name = 'run'; Result = $r }
        $code = $r.Code
    }
}

# The output: each step's tail under its name when there are several, each within its share
# of the termination message, so that a StillNonCompliant node shows the check, the fix and
# the re-check.
if ($steps.Count -eq 1) {
    $text = Tail-Bytes $steps[0].Result.Text $maxOutputBytes
} else {
    $share = [int]($maxOutputBytes / $steps.Count) - 40
    $text = (($steps | ForEach-Object { "== $($_.Name) ==`n" + (Tail-Bytes $_.Result.Text $share) }) -join "`n")
}
foreach ($s in $steps) {
    if ($s.Name -ne 'run') { $text = "$text`nnodetask: $($s.Name) exit code $($s.Result.Code)" }
}
# The completion marker: only a run that got this far writes it. A run stopped on the way
# (a CTRL_SHUTDOWN makes `powershell -File` exit 0) does not, and the operator then records
# the attempt as Interrupted instead of a success.
$text = "$text`nnodetask: exit code $code"

# The kubelet's termination-log file is under the sandbox mount point in both of hcsshim's
# modes. C:\dev\termination-log is the same file only in bind-filter mode (sandbox at C:\hpc\);
# in fallback mode it is a host file that every pod shares and the kubelet never reads.
# BOM-less UTF-8, because Windows PowerShell 5.1 would otherwise write UTF-16.
$utf8 = New-Object System.Text.UTF8Encoding($false)
$paths = @(Join-Path $env:CONTAINER_SANDBOX_MOUNT_POINT 'dev\termination-log')
if ($env:CONTAINER_SANDBOX_MOUNT_POINT.TrimEnd('\') -eq 'C:\hpc') { $paths += 'C:\dev\termination-log' }
$written = $false
foreach ($path in $paths) {
    if (-not (Test-Path -LiteralPath $path)) { continue }
    try {
        [System.IO.File]::WriteAllText($path, $text, $utf8)
        $written = $true
        break
    } catch {
        # Accounts other than SYSTEM may lack rights on the kubelet's pod folder. Say so in
        # the log, which the kubelet reports for a failed container.
        Write-Host "nodetask: could not write the termination message to ${path}: $($_.Exception.Message)"
    }
}
if (-not $written) {
    Write-Host "nodetask: no termination message written (tried: $($paths -join ', ')); the run will be recorded as Interrupted"
}
exit $code
