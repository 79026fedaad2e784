#!/usr/bin/env node
// A device as a team leaving IoT Central has one: the stock Azure IoT Node
// SDK, unmodified, configured the IoT Central way.  pg_fleet's MQTT endpoint
// tests and demo run it.  It prints one JSON line per thing that happens,
// for the caller to read.
//
//   node device.js --id thermostat-1 --key <device key> --ca ca.crt
//        (--dps localhost:8884 --scope <ID scope> | --hub <hub> ) --gateway localhost:8883
//        [--group-key <enrollment group key>]   derive the device key as IoT Central says
//        [--model dtmi:...]                     the modelId sent with the registration
//        [--fail-method getMaxMinReport=500]    answer that method with that status
//        [--answer-delay-ms N] [--ack-properties] [--report '{"name": value}']
//        [--telemetry N] [--get-twin] [--exit-after-ms N] [--no-methods]
//
// With --dps it provisions first (ID scope, registration id, key) and
// connects to the hub the service assigns, through --gateway (the
// connection string's GatewayHostName, as for an IoT Edge gateway).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

function parseArguments(argv) {
  const options = { failMethod: {}, methods: ['getMaxMinReport', 'reboot'], answerDelayMs: 0 };
  for (let i = 2; i < argv.length; i++) {
    const name = argv[i];
    const value = () => argv[++i];
    switch (name) {
      case '--id': options.id = value(); break;
      case '--key': options.key = value(); break;
      case '--group-key': options.groupKey = value(); break;
      case '--ca': options.ca = value(); break;
      case '--dps': options.dps = value(); break;
      case '--scope': options.scope = value(); break;
      case '--hub': options.hub = value(); break;
      case '--gateway': options.gateway = value(); break;
      case '--model': options.model = value(); break;
      case '--methods': options.methods = value().split(','); break;
      case '--no-methods': options.methods = []; break;
      case '--fail-method': {
        const [method, status] = value().split('=');
        options.failMethod[method] = Number(status);
        break;
      }
      case '--answer-delay-ms': options.answerDelayMs = Number(value()); break;
      case '--ack-properties': options.ackProperties = true; break;
      case '--report': options.report = JSON.parse(value()); break;
      case '--telemetry': options.telemetry = Number(value()); break;
      case '--get-twin': options.getTwin = true; break;
      case '--exit-after-ms': options.exitAfterMs = Number(value()); break;
      default:
        throw new Error(`unknown option ${name}`);
    }
  }
  if (!options.id || !(options.key || options.groupKey) || !options.gateway || !(options.dps || options.hub)) {
    throw new Error('--id, --key (or --group-key), --gateway and --dps or --hub are required');
  }
  return options;
}

function say(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n');
}

// IoT Central's derived device key: HMAC-SHA256 of the id under the group key
function deriveKey(groupKey, id) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(id, 'utf8').digest('base64');
}

function provision(options, key) {
  const security = new SymmetricKeySecurityClient(options.id, key);
  const client = ProvisioningDeviceClient.create(options.dps, options.scope, new ProvisioningMqtt(), security);
  if (options.model) client.setProvisioningPayload({ modelId: options.model });
  return new Promise((resolve, reject) => {
    client.register((err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function main() {
  const options = parseArguments(process.argv);
  const key = options.key || deriveKey(options.groupKey, options.id);
  let hub = options.hub;
  if (options.dps) {
    const result = await provision(options, key);
    say('registered', { assignedHub: result.assignedHub, deviceId: result.deviceId });
    hub = result.assignedHub;
  }

  const connectionString = `HostName=${hub};DeviceId=${options.id};SharedAccessKey=${key};GatewayHostName=${options.gateway}`;
  const client = Client.fromConnectionString(connectionString, Mqtt);
  client.setOptions({ ca: fs.readFileSync(options.ca, 'utf8') });
  client.on('error', (err) => say('error', { message: err.message }));
  client.on('disconnect', () => say('disconnected', {}));
  await client.open();
  say('connected', { hub });

  for (const method of options.methods) {
    client.onDeviceMethod(method, (request, response) => {
      say('method', { name: request.methodName, payload: request.payload, rid: request.requestId });
      const status = options.failMethod[method] || 200;
      setTimeout(() => {
        response.send(status, status === 200 ? { answeredBy: options.id } : { error: 'failed on purpose' }, (err) => {
          if (err) say('error', { message: err.message });
          else say('answered', { name: method, status });
        });
      }, options.answerDelayMs);
    });
  }

  if (options.getTwin || options.ackProperties || options.report) {
    const twin = await client.getTwin();
    say('twin', { desired: twin.properties.desired, reported: twin.properties.reported });
    twin.on('properties.desired', (delta) => {
      say('desired', { patch: delta });
      if (!options.ackProperties) return;
      const ack = {};
      for (const [name, value] of Object.entries(delta)) {
        if (name.startsWith('$')) continue;
        ack[name] = { value, ac: 200, av: delta.$version, ad: 'applied' };
      }
      if (Object.keys(ack).length === 0) return;
      twin.properties.reported.update(ack, (err) => {
        if (err) say('error', { message: err.message });
        else say('acknowledged', { properties: Object.keys(ack), version: delta.$version });
      });
    });
    if (options.report) {
      await new Promise((resolve, reject) =>
        twin.properties.reported.update(options.report, (err) => (err ? reject(err) : resolve())));
      say('reported', { patch: options.report });
    }
  }

  if (options.telemetry) {
    const { Message } = require('azure-iot-device');
    for (let i = 0; i < options.telemetry; i++) {
      await client.sendEvent(new Message(JSON.stringify({ temperature: 20 + i })));
    }
    say('telemetry', { sent: options.telemetry });
  }

  say('ready', {});
  if (options.exitAfterMs) {
    setTimeout(async () => {
      await client.close();
      say('closed', {});
      process.exit(0);
    }, options.exitAfterMs);
  }
  process.on('SIGTERM', async () => {
    await client.close();
    process.exit(0);
  });
}

main().catch((err) => {
  say('failed', { message: err.message, name: err.name });
  process.exit(2);
});
