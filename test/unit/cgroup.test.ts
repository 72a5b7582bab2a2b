import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { UserError } from '../../src/util/errors.js';

const line = (id: number, root: string, mp: string, fs: string): string => `${id} 1 0:${id} ${root} ${mp} rw,relatime - ${fs} ${fs} rw`;

test('cgroup2 mount: found by filesystem type, hybrid layout included', () => {
  const mi = [line(30, '/', '/sys/fs/cgroup', 'tmpfs'), line(41, '/', '/sys/fs/cgroup/unified', 'cgroup2'), line(42, '/', '/sys/fs/cgroup/cpu', 'cgroup')].join(
    '\n',
  );
  assert.equal(cgroup2Mount(mi), '/sys/fs/cgroup/unified');
});

test('cgroup2 mount: a mount of the hierarchy root wins over a bind mount of a subtree', () => {
  const mi = [line(50, '/kubepods', '/var/lib/x', 'cgroup2'), line(51, '/', '/sys/fs/cgroup', 'cgroup2')].join('\n');
  assert.equal(cgroup2Mount(mi), '/sys/fs/cgroup');
  assert.equal(cgroup2Mount(line(50, '/kubepods', '/var/lib/x', 'cgroup2')), '/var/lib/x', 'a subtree when nothing else');
});

test('cgroup2 mount: octal escapes in the mount point are undone', () => {
  assert.equal(cgroup2Mount(line(60, '/', '/mnt/with\\040space', 'cgroup2')), '/mnt/with space');
});

test('no cgroup2 mount: one clear line (a UserError) naming the fix', () => {
  assert.throws(
    () => cgroup2Mount(line(30, '/', '/sys/fs/cgroup', 'tmpfs')),
    (e: unknown) => e instanceof UserError && /mount -t cgroup2/.test((e as Error).message),
  );
});
