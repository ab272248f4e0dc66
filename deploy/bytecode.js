'use strict';

// Local plugin: ship bytecode compiled by the runtime's own Python inside the Lambda zip.
//
// - before packaging, checks that `custom.pythonRequirements.pythonBin` runs and is the
//   runtime's version (python3.12 -> 3.12); otherwise stops with advice, before any pip run;
// - after serverless-python-requirements has injected the wheels (list this plugin after it),
//   runs deploy/compile_bytecode.py with that interpreter on every zip of the package.
//
// Why: /var/task is read-only, so a zip without bytecode is compiled again at every cold start.

const { spawnSync } = require('child_process');
const path = require('path');
const { versionOf } = require('./python');

class ShipBytecode {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      // earlier than serverless-python-requirements' pip run (before:createDeploymentArtifacts)
      'package:initialize': () => this.check(),
      'after:package:createDeploymentArtifacts': () => this.compile(),
      'deploy:function:initialize': () => this.check(),
      'after:deploy:function:packageFunction': () => this.compile(),
    };
  }

  get runtimeVersion() {
    return /^python(\d+\.\d+)$/.exec(this.serverless.service.provider.runtime || '')[1];
  }

  get pythonBin() {
    const custom = this.serverless.service.custom || {};
    return (custom.pythonRequirements || {}).pythonBin;
  }

  error(message) {
    return new this.serverless.classes.Error(message, 'SHIP_BYTECODE_FAILED');
  }

  check() {
    const want = this.runtimeVersion;
    const got = this.pythonBin && versionOf(this.pythonBin);
    if (got === want) return;
    const envName = `PYTHON${want.replace('.', '')}`;
    throw this.error(
      `Packaging needs CPython ${want}, the version of provider.runtime, to build the wheels ` +
        `and bytecode of the zip; "${this.pythonBin}" ${got ? `is Python ${got}` : 'does not run'}. ` +
        `Install it (e.g. \`pyenv install ${want}\`) or point ${envName} at it ` +
        `(${envName}=/path/to/python${want} make package).`
    );
  }

  artifacts() {
    const service = this.serverless.service;
    const found = new Set();
    if (service.package && service.package.artifact) found.add(service.package.artifact);
    for (const name of service.getAllFunctions()) {
      const fn = service.getFunction(name);
      if (fn.package && fn.package.artifact) found.add(fn.package.artifact);
    }
    return [...found]
      .filter((artifact) => artifact.endsWith('.zip') && !artifact.startsWith('s3://'))
      .map((artifact) => path.resolve(this.serverless.serviceDir, artifact));
  }

  compile() {
    const zips = this.artifacts();
    if (!zips.length) return;
    const script = path.join(__dirname, 'compile_bytecode.py');
    const run = spawnSync(
      this.pythonBin,
      [script, '--expect', this.runtimeVersion, ...zips],
      { stdio: 'inherit' }
    );
    if (run.status !== 0) {
      throw this.error(`deploy/compile_bytecode.py failed (exit ${run.status}, ${run.error || 'see above'})`);
    }
  }
}

module.exports = ShipBytecode;
