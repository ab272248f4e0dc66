'use strict';

// Local plugin: refuse to deploy functions whose settings resolved empty.
//
// Stage `dev` reads the settings from the shell's environment and leaves them empty when
// unset, so that `make package` and `sls invoke local` work offline; deploying that would
// ship functions that cannot start. On `sls deploy` (and `sls deploy function`) this stops
// before the package is built and before any AWS call, naming what is missing and where it
// is read from. Other commands are not concerned.

const REQUIRED = ['UPSTASH_REDIS_REST_URL', 'UPSTASH_REDIS_REST_TOKEN'];

class SettingsGuard {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'package:initialize': () => this.check(),
      'deploy:function:initialize': () => this.check(),
    };
  }

  isDeploy() {
    const commands = (this.serverless.processedInput || {}).commands || [];
    return commands[0] === 'deploy';
  }

  problems(name, fn) {
    const env = { ...(this.serverless.service.provider.environment || {}), ...(fn.environment || {}) };
    const empty = (key) => env[key] === undefined || String(env[key]).trim() === '';
    const found = REQUIRED.filter(empty);
    const http = (fn.events || []).some((event) => event.httpApi);
    const trusted = String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() === 'true';
    if (http && !trusted && empty('AUTH_JWT_SECRET') && empty('AUTH_JWKS_URL')) {
      found.push('AUTH_JWT_SECRET or AUTH_JWKS_URL');
    }
    return found.length ? [`${name}: ${found.join(', ')}`] : [];
  }

  check() {
    if (!this.isDeploy()) return;
    const service = this.serverless.service;
    const problems = service
      .getAllFunctions()
      .flatMap((name) => this.problems(name, service.getFunction(name)));
    if (!problems.length) return;
    const stage = this.serverless.getProvider('aws').getStage();
    const where =
      stage === 'dev'
        ? 'Stage dev reads them from the environment of the shell that runs sls: export them.'
        : `Stage ${stage} reads them from SSM parameters under /agent-rebalance/${stage}/ ` +
          '(or --param), see docs/deploy.md.';
    throw new this.serverless.classes.Error(
      `Refusing to deploy functions with empty settings:\n  ${problems.join('\n  ')}\n${where}`,
      'EMPTY_SETTINGS'
    );
  }
}

module.exports = SettingsGuard;
