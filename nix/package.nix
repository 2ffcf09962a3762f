# The gateway as a Nix package: src/ run by Node 24 (which strips the types of
# .ts files itself, as `npm start` does), with the production dependencies of
# package-lock.json, and a `realtime-gateway` executable.
#
# package-lock.json records each package's `integrity` but not where it was
# downloaded from. Each tarball is fetched by `npm pack name@version` in a
# fixed-output derivation whose hash is that integrity, so the registry is
# npm's own built-in default unless `npmRegistry` names another (a mirror):
#   packages.<system>.default.override { npmRegistry = "https://npm.mirror.example/"; }
{ lib
, stdenvNoCC
, nodejs_24
, makeWrapper
, cacert
, npmRegistry ? null
}:

let
  root = ../.;
  manifest = lib.importJSON (root + "/package.json");
  lock = lib.importJSON (root + "/package-lock.json");

  # Everything npm would install with --omit=dev: not the root, not dev-only.
  productionEntries = lib.filterAttrs
    (path: entry: path != "" && !(entry.dev or false) && !(entry.link or false))
    lock.packages;

  # "node_modules/a/node_modules/@scope/b" -> "@scope/b"; an alias names its target.
  packageName = path: entry: entry.name or (lib.last (lib.splitString "node_modules/" path));

  fetchFromRegistry = path: entry:
    let
      name = packageName path entry;
      spec = "${name}@${entry.version}";
    in
    assert lib.assertMsg (entry ? integrity) "package-lock.json: ${path} has no integrity";
    stdenvNoCC.mkDerivation ({
      name = "${lib.replaceStrings [ "@" "/" ] [ "" "-" ] name}-${entry.version}.tgz";
      nativeBuildInputs = [ nodejs_24 ];
      outputHash = entry.integrity;
      outputHashMode = "flat";
      impureEnvVars = lib.fetchers.proxyImpureEnvVars;
      SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
      buildCommand = ''
        export HOME="$TMPDIR"
        mkdir "$TMPDIR/pack"
        npm pack --ignore-scripts --silent --pack-destination "$TMPDIR/pack" ${lib.escapeShellArg spec} >/dev/null
        mv "$TMPDIR"/pack/*.tgz "$out"
      '';
    } // lib.optionalAttrs (npmRegistry != null) { npm_config_registry = npmRegistry; });

  # The lock npm installs from inside the build: the same tree, production
  # entries only, each resolved to its tarball in the store.
  offlineLock = lock // {
    packages = {
      "" = removeAttrs lock.packages."" [ "devDependencies" ];
    } // lib.mapAttrs (path: entry: entry // { resolved = "file:${fetchFromRegistry path entry}"; }) productionEntries;
  };
  offlineManifest = removeAttrs manifest [ "devDependencies" "scripts" ];
in
stdenvNoCC.mkDerivation {
  pname = "realtime-gateway";
  inherit (manifest) version;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [ (root + "/src") (root + "/package.json") ];
  };

  nativeBuildInputs = [ nodejs_24 makeWrapper ];

  offlineManifestJson = builtins.toJSON offlineManifest;
  offlineLockJson = builtins.toJSON offlineLock;
  passAsFile = [ "offlineManifestJson" "offlineLockJson" ];

  buildPhase = ''
    runHook preBuild
    export HOME="$TMPDIR"
    mkdir "$TMPDIR/install"
    cp "$offlineManifestJsonPath" "$TMPDIR/install/package.json"
    cp "$offlineLockJsonPath" "$TMPDIR/install/package-lock.json"
    (cd "$TMPDIR/install" && npm ci --offline --omit=dev --ignore-scripts --no-audit --no-fund)
    runHook postBuild
  '';

  # Not under a node_modules folder: Node refuses to strip the types of .ts
  # files that live in one.
  installPhase = ''
    runHook preInstall
    app="$out/share/realtime-gateway"
    mkdir -p "$app"
    cp -r src package.json "$app/"
    cp -r "$TMPDIR/install/node_modules" "$app/"
    makeWrapper ${lib.getExe nodejs_24} "$out/bin/realtime-gateway" \
      --add-flags "--max-semi-space-size=32 $app/src/main.ts"
    runHook postInstall
  '';

  meta = {
    description = "Multi-tenant Phoenix Channels WebSocket gateway in front of apps' HTTP APIs";
    license = lib.licenses.mit;
    mainProgram = "realtime-gateway";
    platforms = [ "x86_64-linux" "aarch64-linux" ];
  };
}
