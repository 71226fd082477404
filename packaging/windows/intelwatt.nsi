; intelwatt-console Windows installer (NSIS 3.08+).
;
; makensis -DVERSION=0.1.0 -DVERSION4=0.1.0.0 -DPAYLOAD=C:\path\dist\intelwatt ^
;          -DOUTFILE=C:\path\dist\intelwatt-console-0.1.0-setup.exe packaging\windows\intelwatt.nsi
;
; Defines (the version always comes from app.__version__ via packaging/version_info.py):
;   VERSION    the version string            (required)
;   VERSION4   MAJOR.MINOR.PATCH.0           (required, for the file properties)
;   PAYLOAD    the PyInstaller bundle folder (required)
;   OUTFILE    the installer to write        (required)
;   EXE        base name of the command-line executable (default: intelwatt -> intelwatt.exe;
;              the Linux stand-in payload passes EXE=intelwatt to get the ELF file's name)
;   GUI_EXE    the windowed executable for the Start menu (default: intelwatt-gui.exe)
;   WINSW      path to WinSW-x64.exe: adds the optional Windows service section
;   SIGN_CMD   command that Authenticode-signs "%1" (signs the uninstaller and the installer)

!macro _require NAME
  !ifndef ${NAME}
    !error "define ${NAME} (makensis -D${NAME}=...; see the header of this file)"
  !endif
!macroend
!insertmacro _require VERSION
!insertmacro _require VERSION4
!insertmacro _require PAYLOAD
!insertmacro _require OUTFILE
!ifndef EXE
  !define EXE "intelwatt.exe"
!endif
!ifndef GUI_EXE
  !define GUI_EXE "intelwatt-gui.exe"
!endif

!define APP "intelwatt-console"
!define APP_NAME "intelwatt console"
!define PUBLISHER "intelWATT"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"
!define SERVICE "intelwatt-headless"
; ProgramData\intelwatt: $APPDATA is the all-users folder after SetShellVarContext all.
!define DATA "$APPDATA\intelwatt"
!define SERVICE_EXE "intelwatt-headless-service.exe"

Unicode true
SetCompressor /SOLID lzma
ManifestDPIAware true
RequestExecutionLevel admin
Name "${APP_NAME} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\${APP}"
InstallDirRegKey HKLM "${UNINST_KEY}" "InstallLocation"
BrandingText "${APP} ${VERSION}"

VIProductVersion "${VERSION4}"
VIFileVersion "${VERSION4}"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP_NAME} installer"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "LegalCopyright" "${PUBLISHER}"

!ifdef SIGN_CMD
  !finalize '${SIGN_CMD} "%1"'
  !uninstfinalize '${SIGN_CMD} "%1"'
!endif

!include "MUI2.nsh"
!include "x64.nsh"
!include "LogicLib.nsh"

!define MUI_ICON "${PAYLOAD}\_internal\resources\icons\intelwatt.ico"
!define MUI_UNICON "${PAYLOAD}\_internal\resources\icons\intelwatt.ico"
!define MUI_ABORTWARNING
!define MUI_COMPONENTSPAGE_SMALLDESC

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP "${APP_NAME} needs 64-bit Windows." /SD IDOK
    Abort
  ${EndIf}
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Function un.onInit
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Section "!${APP_NAME} (required)" SecMain
  SectionIn RO
  ; A running service holds the executable open: stop it before replacing files on upgrade.
  IfFileExists "$INSTDIR\service\${SERVICE_EXE}" 0 +2
    ExecWait '"$INSTDIR\service\${SERVICE_EXE}" stop'
  RMDir /r "$INSTDIR\_internal"
  SetOutPath "$INSTDIR"
  File /r "${PAYLOAD}\*.*"

  ; Configuration and data live in ProgramData, writable by the service and kept on upgrade.
  CreateDirectory "${DATA}"
  CreateDirectory "${DATA}\logs"
  CreateDirectory "${DATA}\staging"
  SetOverwrite off
  SetOutPath "${DATA}"
  File "/oname=site.toml" "${PAYLOAD}\_internal\resources\sites\demo-ro.toml"
  SetOverwrite on

  WriteUninstaller "$INSTDIR\uninstall.exe"
  WriteRegStr HKLM "${UNINST_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKLM "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINST_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKLM "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\${GUI_EXE}"
  WriteRegStr HKLM "${UNINST_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKLM "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKLM "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINST_KEY}" "NoRepair" 1
SectionEnd

Section "Start menu entries" SecShortcuts
  ; The shortcuts start in the bundle's _internal folder, where the site file's relative
  ; paths (resources/agents/..., resources/trust) resolve.
  SetOutPath "$INSTDIR\_internal"
  CreateDirectory "$SMPROGRAMS\${APP_NAME}"
  CreateShortcut "$SMPROGRAMS\${APP_NAME}\${APP_NAME}.lnk" "$INSTDIR\${GUI_EXE}" \
    'console --site "${DATA}\site.toml"' "$INSTDIR\${GUI_EXE}" 0
  CreateShortcut "$SMPROGRAMS\${APP_NAME}\${APP_NAME} (demo plant).lnk" "$INSTDIR\${GUI_EXE}" \
    "console --demo" "$INSTDIR\${GUI_EXE}" 0
  CreateShortcut "$SMPROGRAMS\${APP_NAME}\Self-test.lnk" "%COMSPEC%" \
    '/k ""$INSTDIR\${EXE}" --self-test"' "$INSTDIR\${GUI_EXE}" 0
  CreateShortcut "$SMPROGRAMS\${APP_NAME}\Uninstall.lnk" "$INSTDIR\uninstall.exe"
SectionEnd

!ifdef WINSW
Section /o "Windows service (headless control core)" SecService
  ; WinSW (github.com/winsw/winsw, MIT) wraps the console-mode executable as a service: it
  ; answers the service control manager, starts `intelwatt headless`, sends Ctrl+C on stop and
  ; restarts it on failure. Installed with manual start, like the Linux unit (not enabled).
  SetOutPath "$INSTDIR\service"
  File "/oname=${SERVICE_EXE}" "${WINSW}"
  FileOpen $0 "$INSTDIR\service\intelwatt-headless-service.xml" w
  FileWrite $0 '<service>$\r$\n'
  FileWrite $0 '  <id>${SERVICE}</id>$\r$\n'
  FileWrite $0 '  <name>intelwatt control core (headless)</name>$\r$\n'
  FileWrite $0 '  <description>intelwatt-console ${VERSION}: the control core without a UI.</description>$\r$\n'
  FileWrite $0 '  <executable>$INSTDIR\${EXE}</executable>$\r$\n'
  FileWrite $0 '  <arguments>--log-dir "${DATA}\logs" headless --site "${DATA}\site.toml"</arguments>$\r$\n'
  FileWrite $0 '  <workingdirectory>$INSTDIR\_internal</workingdirectory>$\r$\n'
  FileWrite $0 '  <startmode>Manual</startmode>$\r$\n'
  FileWrite $0 '  <stoptimeout>30 sec</stoptimeout>$\r$\n'
  FileWrite $0 '  <onfailure action="restart" delay="10 sec"/>$\r$\n'
  FileWrite $0 '  <logpath>${DATA}\logs</logpath>$\r$\n'
  FileWrite $0 '  <log mode="roll-by-size"/>$\r$\n'
  FileWrite $0 '</service>$\r$\n'
  FileClose $0
  ExecWait '"$INSTDIR\service\${SERVICE_EXE}" install' $1
  ${If} $1 != 0
    MessageBox MB_ICONEXCLAMATION "Registering the ${SERVICE} service failed (exit code $1)." /SD IDOK
  ${EndIf}
SectionEnd
!endif

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecMain} "The console, the headless control core and the shipped agents."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecShortcuts} "Start menu entries for the console, the demo and the self-test."
!ifdef WINSW
  !insertmacro MUI_DESCRIPTION_TEXT ${SecService} "Register intelwatt-headless as a Windows service (manual start)."
!endif
!insertmacro MUI_FUNCTION_DESCRIPTION_END

Section "Uninstall"
  IfFileExists "$INSTDIR\service\${SERVICE_EXE}" 0 no_service
    ExecWait '"$INSTDIR\service\${SERVICE_EXE}" stop'
    ExecWait '"$INSTDIR\service\${SERVICE_EXE}" uninstall'
  no_service:
  RMDir /r "$SMPROGRAMS\${APP_NAME}"
  RMDir /r "$INSTDIR\_internal"
  RMDir /r "$INSTDIR\service"
  Delete "$INSTDIR\${EXE}"
  Delete "$INSTDIR\${GUI_EXE}"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKLM "${UNINST_KEY}"
  ; Site configuration, logs and staged agents are plant data: kept unless the user says so.
  MessageBox MB_YESNO|MB_ICONQUESTION \
    "Also delete the site configuration, logs and staged agents in ${DATA}?" \
    /SD IDNO IDNO keep_data
    RMDir /r "${DATA}"
  keep_data:
SectionEnd
