'use strict';

// Local plugin: refuse to deploy functions whose settings are missing, or that would carry a
// secret's value.
//
// A deployed function gets each secret as the *name* of an SSM SecureString parameter
// (`X_SSM_PARAMETER`) and reads it at its cold start, so that no secret value is in the
// template, the state file or the deployment bucket. Stage `dev` also fills `X` from the
// shell's environment, for `sls invoke local`; deploying that would ship the value. On
// `sls deploy` (and `sls deploy function`) this stops before the package is built and before
// any AWS call, naming each function with what it lacks or would leak; a prebuilt package
// (`sls deploy --package DIR`) is checked again, on its compiled template, before the upload.
// Other commands are not concerned.

const REQUIRED = ['UPSTASH_REDIS_REST_URL', 'UPSTASH_REDIS_REST_TOKEN'];
// The values that must never reach an artifact (DESIGN.md, Configuration).
const SECRETS = [
  'UPSTASH_REDIS_REST_TOKEN',
  'AUTH_JWT_SECRET',
  'METRICS_SCRAPE_TOKEN',
  'REBALANCE_WEBHOOK_SECRET',
];
const SUFFIX = '_SSM_PARAMETER';

const filled = (env, key) => env[key] !== undefined && String(env[key]).trim() !== '';

class SettingsGuard {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'package:initialize': () => this.check(),
      'deploy:function:initialize': () => this.check(),
      'before:deploy:deploy': () => this.checkTemplate(),
    };
  }

  isDeploy() {
    const commands = (this.serverless.processedInput || {}).commands || [];
    return commands[0] === 'deploy';
  }

  missing(env, http) {
    const set = (key) => filled(env, key) || filled(env, key + SUFFIX);
    const found = REQUIRED.filter((key) => !set(key));
    const trusted = String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() === 'true';
    if (http && !trusted && !set('AUTH_JWT_SECRET') && !filled(env, 'AUTH_JWKS_URL')) {
      found.push('AUTH_JWT_SECRET or AUTH_JWKS_URL');
    }
    return found;
  }

  environments() {
    const service = this.serverless.service;
    return service.getAllFunctions().map((name) => {
      const fn = service.getFunction(name);
      const env = { ...(service.provider.environment || {}), ...(fn.environment || {}) };
      return { name, env, http: (fn.events || []).some((event) => event.httpApi) };
    });
  }

  check() {
    if (!this.isDeploy()) return;
    const functions = this.environments();
    const missing = functions.flatMap(({ name, env, http }) => {
      const found = this.missing(env, http);
      return found.length ? [`${name}: ${found.join(', ')}`] : [];
    });
    if (missing.length) this.refuseMissing(missing);
    this.refuseLeaks(functions);
  }

  // A prebuilt package skips packaging: read what it would deploy.
  checkTemplate() {
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate.Resources;
    const functions = Object.entries(resources)
      .filter(([, resource]) => resource.Type === 'AWS::Lambda::Function')
      .map(([name, resource]) => ({
        name,
        env: ((resource.Properties || {}).Environment || {}).Variables || {},
      }));
    this.refuseLeaks(functions);
  }

  refuseLeaks(functions) {
    const leaks = functions.flatMap(({ name, env }) => {
      const found = SECRETS.filter((key) => filled(env, key));
      return found.length ? [`${name}: ${found.join(', ')}`] : [];
    });
    if (!leaks.length) return;
    throw new this.serverless.classes.Error(
      `Refusing to deploy secret values in plain text:\n  ${leaks.join('\n  ')}\n` +
        'Deployed functions read secrets from SSM at run time (docs/deploy.md); stage dev ' +
        'takes these from the shell for `sls invoke local`: unset them before `sls deploy`.',
      'SECRET_IN_ARTIFACT'
    );
  }

  refuseMissing(problems) {
    throw new this.serverless.classes.Error(
      `Refusing to deploy functions with empty settings:\n  ${problems.join('\n  ')}\n` +
        'Each needs the name of its SSM parameter (the ...Parameter params of serverless.yml, ' +
        'see docs/deploy.md) or, for non-secrets, a value.',
      'EMPTY_SETTINGS'
    );
  }
}

module.exports = SettingsGuard;
