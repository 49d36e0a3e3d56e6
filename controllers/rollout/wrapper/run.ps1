# NodeTask wrapper: runs the task's script on the host and reports its result to Kubernetes.
# It makes the pod's exit code the script's own and writes the tail of the script's output
# to the container's termination message, so that the result and output of successful runs
# reach the NodeTask's status too (Kubernetes reads logs only for failed containers).
#
# The script is run with -File, never -Command: on nodes where hcsshim uses the bind filter
# (Windows Server 2022 and later with containerd 1.7+) the container's command line goes
# through `cmd /c`, which breaks multi-line commands and interprets & | > %.
$ErrorActionPreference = 'Continue'
$maxOutputBytes = 4000
$maxLines = 200

# Windows PowerShell decodes a child's piped output with the console's output encoding, the
# OEM code page: make it UTF-8, so that non-ASCII output survives into the log and status.
try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding($false) } catch { }

$dir = Join-Path $env:CONTAINER_SANDBOX_MOUNT_POINT 'nodetask'
switch ($env:NODETASK_INTERPRETER) {
    'Cmd'  { $exe = 'cmd.exe';        $argv = @('/d', '/c', (Join-Path $dir 'script.cmd')) }
    'Pwsh' { $exe = 'pwsh.exe';       $argv = @('-NoLogo', '-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', (Join-Path $dir 'script.ps1')) }
    default { $exe = 'powershell.exe'; $argv = @('-NoLogo', '-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', (Join-Path $dir 'script.ps1')) }
}

# Keep the last lines in memory while passing every line on to the pod's log.
$tail = New-Object 'System.Collections.Generic.Queue[string]'
$code = 1
try {
    & $exe @argv 2>&1 | ForEach-Object {
        $line = "$_"
        Write-Output $line
        $tail.Enqueue($line)
        while ($tail.Count -gt $maxLines) { [void]$tail.Dequeue() }
    }
    $code = $LASTEXITCODE
    if ($null -eq $code) { $code = 1 }
} catch {
    $msg = "nodetask: could not start ${exe}: $($_.Exception.Message)"
    Write-Output $msg
    $tail.Enqueue($msg)
}

$text = ($tail.ToArray() -join "`n")
$bytes = [System.Text.Encoding]::UTF8.GetBytes($text)
if ($bytes.Length -gt $maxOutputBytes) {
    $text = [System.Text.Encoding]::UTF8.GetString($bytes, $bytes.Length - $maxOutputBytes, $maxOutputBytes)
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
        Write-Output "nodetask: could not write the termination message to ${path}: $($_.Exception.Message)"
    }
}
if (-not $written) {
    Write-Output "nodetask: no termination message written (tried: $($paths -join ', ')); the run will be recorded as Interrupted"
}
exit $code
