# Authenticode-sign one file with the certificate in $env:SIGNING_PFX (path) and
# $env:SIGNING_PFX_PASSWORD. Used by the Windows workflow directly and by makensis through
# -DSIGN_CMD (which signs the uninstaller and the installer as they are written).
param([Parameter(Mandatory = $true)][string]$Path)
$ErrorActionPreference = "Stop"
if (-not $env:SIGNING_PFX -or -not (Test-Path $env:SIGNING_PFX)) { throw "SIGNING_PFX is not set or missing" }
$signtool = Get-ChildItem "${env:ProgramFiles(x86)}\Windows Kits\10\bin\*\x64\signtool.exe" |
    Sort-Object FullName -Descending | Select-Object -First 1
if (-not $signtool) { throw "signtool.exe not found (Windows SDK)" }
& $signtool.FullName sign /f $env:SIGNING_PFX /p $env:SIGNING_PFX_PASSWORD /fd SHA256 `
    /tr http://timestamp.digicert.com /td SHA256 /d "intelwatt console" $Path
if ($LASTEXITCODE -ne 0) { throw "signtool failed on $Path ($LASTEXITCODE)" }
