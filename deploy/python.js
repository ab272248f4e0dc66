'use strict';

// Finds the CPython whose version matches `provider.runtime` (python3.12 -> 3.12), for
// `custom.pythonRequirements.pythonBin`: that interpreter builds the requirements and the
// bytecode of the Lambda zip. Looked up in order:
//   1. $PYTHON312 (for python3.12), used as given: a wrong value fails the package clearly;
//   2. `pyenv prefix 3.12`/bin/python3.12 (asked first: its shims on PATH are slower, and
//      fail for a version that is installed but not active);
//   3. `python3.12` on PATH, if it runs;
//   4. /usr/local/bin/python3.12, /usr/bin/python3.12.
// When none runs, the name `python3.12` is returned and `deploy/bytecode.js` stops `sls
// package` with advice; `sls invoke local` and `sls print` never need it.

const { spawnSync } = require('child_process');
const path = require('path');

function versionOf(bin) {
  const run = spawnSync(bin, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], {
    encoding: 'utf8',
    timeout: 10000,
  });
  return run.status === 0 ? run.stdout.trim() : null;
}

function candidates(version) {
  const name = `python${version}`;
  const found = [];
  const pyenv = spawnSync('pyenv', ['prefix', version], { encoding: 'utf8', timeout: 10000 });
  if (pyenv.status === 0) {
    for (const prefix of pyenv.stdout.trim().split(':').filter(Boolean)) {
      found.push(path.join(prefix, 'bin', name));
    }
  }
  found.push(name, path.join('/usr/local/bin', name), path.join('/usr/bin', name));
  return found;
}

function findPython(version) {
  const override = process.env[`PYTHON${version.replace('.', '')}`];
  if (override) return override;
  return candidates(version).find((bin) => versionOf(bin) === version) || `python${version}`;
}

module.exports = async ({ resolveConfigurationProperty }) => {
  const runtime = await resolveConfigurationProperty(['provider', 'runtime']);
  const match = /^python(\d+\.\d+)$/.exec(runtime || '');
  if (!match) throw new Error(`provider.runtime must be a Python runtime, got "${runtime}"`);
  return findPython(match[1]);
};

module.exports.findPython = findPython;
module.exports.versionOf = versionOf;
