# NodeTask wrapper: runs the task's script on the host and reports its result to Kubernetes.
# It makes the pod's exit code the script's own and writes the tail of the script's output
# to the container's termination message, so that the result and output of successful runs
# reach the NodeTask's status too (Kubernetes reads logs only for failed containers).
#
# The script is run with -File, never -Command: containerd 1.7+ wraps a HostProcess command
# in `cmd /c`, which breaks multi-line commands and interprets & | > %.
$ErrorActionPreference = 'Continue'
$maxOutputBytes = 4000
$maxLines = 200

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

# The kubelet mounts the termination-log file under the sandbox (containerd 1.6) or at the
# requested path (containerd 1.7+); write it where it exists. BOM-less UTF-8, because
# Windows PowerShell 5.1 would otherwise write UTF-16.
$utf8 = New-Object System.Text.UTF8Encoding($false)
foreach ($path in @((Join-Path $env:CONTAINER_SANDBOX_MOUNT_POINT 'dev\termination-log'), 'C:\dev\termination-log')) {
    if (Test-Path -LiteralPath $path) {
        try { [System.IO.File]::WriteAllText($path, $text, $utf8); break } catch { }
    }
}
exit $code
