# Evaluates nix/module.nix without nixpkgs, for test/deploy/nix.test.ts: the
# few `lib` functions the module uses, written on builtins, and the option
# values resolved from the declarations' defaults and `settings` as the module
# system would (no priorities, no merging of definitions: one definition each).
#   nix-instantiate --eval --strict --json test/deploy/module-eval.nix --arg settings '{ … }' -A options
{ settings ? { }, hostName ? "node-a", nftables ? true }:

let
  inherit (builtins) attrNames concatStringsSep listToAttrs foldl' mapAttrs substring stringLength;

  declare = attrs: attrs // { isOption = true; };
  type = name: { inherit name; };
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];

  lib = {
    types = {
      str = type "str"; bool = type "bool"; port = type "port"; path = type "path";
      ints.positive = type "int";
      enum = _: type "enum";
      nullOr = inner: inner;
      listOf = _: type "list";
      attrsOf = inner: inner // { attrsOf = true; };
      submodule = module: { submoduleOptions = module.options; };
    };
    mkOption = declare;
    mkEnableOption = description: declare { inherit description; default = false; };
    mkPackageOption = _: name: _: declare { default = { outPath = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-${name}"; }; };
    mkIf = condition: value: if condition then value else null;
    literalExpression = text: text;
    toUpper = builtins.replaceStrings lower upper;
    inherit (builtins) replaceStrings all attrNames attrValues;
    inherit concatStringsSep;
    filterAttrs = keep: set: listToAttrs (builtins.concatMap
      (name: if keep name set.${name} then [{ inherit name; value = set.${name}; }] else [ ]) (attrNames set));
    concatMapAttrs = f: set: foldl' (merged: name: merged // f name set.${name}) { } (attrNames set);
    mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);
    concatMapStrings = f: list: concatStringsSep "" (map f list);
    boolToString = value: if value then "true" else "false";
    optional = condition: value: if condition then [ value ] else [ ];
    hasPrefix = prefix: text: substring 0 (stringLength prefix) text == prefix;
    getExe = package: "${package.outPath}/bin/realtime-gateway";
  };

  pkgs = { writeShellScript = name: text: { inherit name text; }; };

  # An option's value: the setting when given, else its default; the apps'
  # submodule values likewise, per app.
  resolve = declarations: given: mapAttrs
    (name: declaration:
      if declaration.isOption or false then
        (if declaration.type.submoduleOptions or null != null
        then mapAttrs (_: app: resolve declaration.type.submoduleOptions app) (given.${name} or declaration.default)
        else given.${name} or declaration.default)
      else resolve declaration (given.${name} or { }))
    declarations;

  config = {
    networking = { inherit hostName; nftables.enable = nftables; };
    services.realtime-gateway = resolve module.options.services.realtime-gateway settings;
  };

  module = import ../../nix/module.nix { inherit config lib pkgs; };

  walk = prefix: attrs: builtins.concatLists (map
    (name:
      let value = attrs.${name}; path = prefix + name;
      in if value.isOption or false
      then [ path ] ++ (if (value.type or { }) ? submoduleOptions then walk (path + ".<id>.") value.type.submoduleOptions else [ ])
      else walk (path + ".") value)
    (attrNames attrs));
in
{
  # Every option's path, an app's options under `apps.<id>`.
  options = walk "services.realtime-gateway." module.options.services.realtime-gateway;

  # What the module makes of `settings`.
  config = {
    inherit (module.config) assertions;
    failedAssertions = map (assertion: assertion.message) (builtins.filter (assertion: !assertion.assertion) module.config.assertions);
    service = module.config.systemd.services.realtime-gateway;
    firewall = module.config.networking.firewall;
  };
}
