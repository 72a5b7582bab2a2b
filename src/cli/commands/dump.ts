import { Argument, Command } from 'commander';
import { PinnedMaps, listPins, onBpffs } from '../../dataplane/dataplane.js';
import { describeMaps } from '../../dataplane/describe.js';
import { renderDump } from '../../inspect/dump.js';
import { MAP_NAMES, type MapName } from '../../dataplane/layouts.js';
import { UserError } from '../../util/errors.js';
import { bpffsOption, jsonOption, requireRoot, toJson } from '../options.js';

export function dumpCommand(): Command {
  return new Command('dump')
    .description('print every pinned map, decoded (works with no agent running)')
    .addArgument(new Argument('[map]', 'only this map').choices(MAP_NAMES))
    .addOption(bpffsOption())
    .addOption(jsonOption())
    .action((map: MapName | undefined, o: { bpffs: string; json?: boolean }) => {
      requireRoot('meshlane dump');
      const pins = listPins(o.bpffs);
      if (pins.maps.length === 0) {
        if (!onBpffs(o.bpffs))
          throw new UserError(
            `${o.bpffs} is not on a mounted bpffs, so nothing of meshlane is pinned there: mount it (mount -t bpf bpf /sys/fs/bpf) and start 'meshlane agent', or pass the --bpffs the agent uses`,
          );
        throw new UserError(`no meshlane maps are pinned under ${o.bpffs}: start 'meshlane agent' (or pass the --bpffs it uses)`);
      }
      const pinned = new PinnedMaps(o.bpffs);
      try {
        const d = describeMaps(pinned.maps, map);
        process.stdout.write(
          o.json ? toJson({ bpffs: o.bpffs, links: pins.links, maps: d }) + '\n' : `links: ${pins.links.join(', ') || '(none)'}\n${renderDump(d)}`,
        );
      } finally {
        pinned.close();
      }
    });
}
