/** Lab component 'crash' (placeholder until it lands). */
import type { Component } from './types';

export const component: Component = {
  name: 'crash',
  async run() {
    return {};
  },
};
