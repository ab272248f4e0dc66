'use strict';

// Local plugin: tell the drain where to post WebSocket pushes, and keep its permission narrow.
//
// The drain posts status changes with API Gateway's management API of the service's own
// WebSocket API, `https://<api id>.execute-api.<region>.amazonaws.com/<stage>`: known only to
// CloudFormation. Written into the drain's environment in serverless.yml, that intrinsic would
// break `sls invoke local` (it resolves no Fn::Join), so it is added to the compiled template
// instead: deployed drains push, locally invoked ones do not.
//
// The framework also grants every function ManageConnections on any WebSocket API of any
// account (`*:*:*/@connections/*`); that statement is dropped here, leaving the one of
// serverless.yml (provider.iam), which names this service's API and stage only.

const FUNCTION = 'DrainLambdaFunction';
const API = 'WebsocketsApi';

class WsEndpoint {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'before:package:finalize': () => {
        this.addEndpoint();
        this.dropBroadPermission();
      },
    };
  }

  dropBroadPermission() {
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate.Resources;
    const role = resources.IamRoleLambdaExecution;
    if (!role) return;
    const broad = (statement) => JSON.stringify(statement.Resource || '').includes(':*:*:*/@connections/*');
    for (const policy of role.Properties.Policies || []) {
      const document = policy.PolicyDocument;
      document.Statement = document.Statement.filter((statement) => !broad(statement));
    }
  }

  addEndpoint() {
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate.Resources;
    if (!resources[FUNCTION] || !resources[API]) return;
    const properties = resources[FUNCTION].Properties;
    properties.Environment = properties.Environment || { Variables: {} };
    properties.Environment.Variables.WS_API_ENDPOINT = {
      'Fn::Join': ['', [
        'https://', { Ref: API }, '.execute-api.', { Ref: 'AWS::Region' },
        '.amazonaws.com/', this.serverless.getProvider('aws').getStage(),
      ]],
    };
  }
}

module.exports = WsEndpoint;
